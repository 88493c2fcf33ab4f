//! The agent's one error type. Each variant corresponds to one katran-server
//! error code (`code()`), and its message names the offending value.

use std::net::IpAddr;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: the message names the field and the value.
    #[error("invalid {field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },

    #[error("{what} not found")]
    NotFound { what: String },

    #[error("{what} already exists")]
    AlreadyExists { what: String },

    /// A configured capacity (VIPs, reals, ...) is used up.
    #[error("{what} exhausted: all {limit} in use")]
    SpaceExhausted { what: &'static str, limit: u32 },

    /// A feature the datapath does not implement (yet).
    #[error("{feature} is not supported by this datapath")]
    FeatureDisabled { feature: String },

    /// A BPF syscall or object operation failed.
    #[error("BPF operation failed: {op}")]
    Bpf {
        op: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A system call outside BPF (netlink, mount, files) failed.
    #[error("{op} failed")]
    System {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The katran-server error code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. } => "INVALID_REQUEST",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::AlreadyExists { .. } => "ALREADY_EXISTS",
            Error::SpaceExhausted { .. } => "SPACE_EXHAUSTED",
            Error::FeatureDisabled { .. } => "FEATURE_DISABLED",
            Error::Bpf { .. } => "BPF_FAILED",
            Error::System { .. } => "INTERNAL_ERROR",
        }
    }

    /// A label for failure counters (bounded: one per variant).
    pub fn metric_label(&self) -> &'static str {
        self.code()
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidRequest { field, reason: reason.into() }
    }

    pub(crate) fn bpf<E>(op: impl Into<String>, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::Bpf { op: op.into(), source: Box::new(source) }
    }

    pub(crate) fn system(op: impl Into<String>, source: std::io::Error) -> Self {
        Error::System { op: op.into(), source }
    }

    pub(crate) fn vip_not_found(addr: IpAddr, port: u16, proto: u8) -> Self {
        Error::NotFound { what: format!("VIP {}", crate::dataplane::fmt_vip(addr, port, proto)) }
    }
}
