//! The consistent-hash functions of a VIP's ring, with Katran's numeric ids
//! (katran-server's `hash_func`) and weir's names (`maglev`, `maglev_v2`).

/// Consistent-hashing algorithm of a VIP's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum HashFunction {
    /// Katran's original Maglev (`hash_func` 0).
    #[default]
    Maglev,
    /// Maglev V2 (`hash_func` 1): slots proportional to weight.
    MaglevV2,
}

/// (function, Katran id, name): the one table.
const TABLE: [(HashFunction, u32, &str); 2] =
    [(HashFunction::Maglev, 0, "maglev"), (HashFunction::MaglevV2, 1, "maglev_v2")];

impl HashFunction {
    /// Every hash function, in Katran id order.
    pub const ALL: [HashFunction; 2] = [HashFunction::Maglev, HashFunction::MaglevV2];

    /// katran-server's numeric `hash_func`.
    pub fn katran_id(self) -> u32 {
        TABLE[self as usize].1
    }

    /// From katran-server's numeric `hash_func` / hash-function field; None for unknown values.
    pub fn from_katran(id: u32) -> Option<Self> {
        TABLE.iter().find(|row| row.1 == id).map(|row| row.0)
    }

    /// `maglev`, `maglev_v2`: weir's names in configuration documents.
    pub fn name(self) -> &'static str {
        TABLE[self as usize].2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        for f in HashFunction::ALL {
            assert_eq!(HashFunction::from_katran(f.katran_id()), Some(f));
        }
        assert_eq!((HashFunction::Maglev.katran_id(), HashFunction::MaglevV2.katran_id()), (0, 1));
        assert_eq!((HashFunction::Maglev.name(), HashFunction::MaglevV2.name()), ("maglev", "maglev_v2"));
        assert_eq!(HashFunction::from_katran(2), None);
    }
}
