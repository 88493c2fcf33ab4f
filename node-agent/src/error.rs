//! The agent's one error type. Each variant corresponds to one katran-server
//! error code ([`Code`], `code()`), and its message names the offending value.

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error codes of katran-server's envelope (`error.code`), and weir's own
/// where katran has none (CLUSTER_OWNED, READ_ONLY, ...). Each has one HTTP
/// status (`Code::status`, at the HTTP edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    ReadOnly,
    NotFound,
    MethodNotAllowed,
    AlreadyExists,
    ClusterOwned,
    SpaceExhausted,
    FeatureDisabled,
    LbNotInitialized,
    TooManyConnections,
    BpfFailed,
    InternalError,
    /// The current API's failed call to an external health checker. weir's
    /// prober runs in the agent, so nothing answers it yet; listed because
    /// the API document has it.
    HcServiceUnavailable,
}

impl Code {
    /// The code as the envelope spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "INVALID_REQUEST",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Forbidden => "FORBIDDEN",
            Code::ReadOnly => "READ_ONLY",
            Code::NotFound => "NOT_FOUND",
            Code::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::ClusterOwned => "CLUSTER_OWNED",
            Code::SpaceExhausted => "SPACE_EXHAUSTED",
            Code::FeatureDisabled => "FEATURE_DISABLED",
            Code::LbNotInitialized => "LB_NOT_INITIALIZED",
            Code::TooManyConnections => "TOO_MANY_CONNECTIONS",
            Code::BpfFailed => "BPF_FAILED",
            Code::InternalError => "INTERNAL_ERROR",
            Code::HcServiceUnavailable => "HC_SERVICE_UNAVAILABLE",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: the message names the field and the value.
    #[error("invalid {field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },

    /// An address that is not one this request may carry (not unicast, of
    /// the other family): bad input counted in katran's
    /// `addr_validation_failed` (`/stats/userspace`).
    #[error("invalid {field}: {reason}")]
    InvalidAddress { field: &'static str, reason: String },

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
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidRequest { .. } | Error::InvalidAddress { .. } => Code::InvalidRequest,
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::SpaceExhausted { .. } => Code::SpaceExhausted,
            Error::FeatureDisabled { .. } => Code::FeatureDisabled,
            Error::Bpf { .. } => Code::BpfFailed,
            Error::System { .. } => Code::InternalError,
        }
    }

    /// A label for failure counters (bounded: one per code).
    pub fn metric_label(&self) -> &'static str {
        self.code().as_str()
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidRequest { field, reason: reason.into() }
    }

    pub(crate) fn bad_address(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidAddress { field, reason: reason.into() }
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
}
