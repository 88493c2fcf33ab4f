//! Placeholder: being written (Maglev rings). Replaced by the real module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum HashFunction { #[default] Maglev, MaglevV2 }
