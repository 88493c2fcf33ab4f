//! The flags of the standalone server: every katran-server flag (`-host -port
//! -tls-cert -tls-key -tls-client-ca -cors -cors-origins -read-timeout
//! -write-timeout -idle-timeout -no-logging -no-recovery`) and weir's own.
//!
//! katran-server is a Go program, so its users write `-port 8080`,
//! `-port=8080` and `--port=8080`. clap only knows `--port`: [`normalize_args`]
//! rewrites the single-dash long forms of *these* flags before clap sees them,
//! so both spellings give the same configuration, and boolean flags accept Go's
//! `-cors=false` as well as the bare `-cors`.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::ArgAction;
use ipnet::IpNet;

use super::duration;

/// Long flags that take a value (`-port 8080`): their next argument is a value,
/// never a flag to rewrite. (Switches such as `-cors` take theirs only as `-cors=false`.)
const VALUE_FLAGS: &[&str] = &[
    "host",
    "port",
    "tls-cert",
    "tls-key",
    "tls-client-ca",
    "cors-origins",
    "read-timeout",
    "write-timeout",
    "idle-timeout",
    "config",
    "allow-cidr",
    "token-file",
    "body-limit",
    "metrics-addr",
    "pin-root",
    "state-dir",
    "node-name",
    "interface",
    "default-mac",
    "xdp-mode",
];

/// `--body-limit`'s default and largest value, 1 MiB (the admin conventions'
/// range is [1, 1 MiB]): the API's biggest request, a batch of `max_reals`
/// (4,096) IPv6 reals as katran's Go client encodes it, is about 310 KB, and
/// every body is buffered in memory.
pub const MAX_BODY_LIMIT: u64 = 1 << 20;

/// Rewrites `-flag`, `-flag=value` into `--flag`, `--flag=value`, up to the
/// first positional argument (a subcommand such as `decap` keeps its arguments
/// untouched) or `--`. Values of the server's flags that take one are never
/// rewritten (`-host -weird` stays a value).
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut args = args.into_iter().map(Into::into);
    out.extend(args.next()); // the program name
    let mut value_next = false;
    for arg in args.by_ref() {
        if value_next {
            value_next = false;
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" || !text.starts_with('-') || text == "-" {
            // `--`, or a positional (the subcommand): the rest is not ours.
            out.push(arg);
            break;
        }
        let body = text.trim_start_matches('-');
        let (name, has_value) = match body.split_once('=') {
            Some((name, _)) => (name, true),
            None => (body, false),
        };
        let known_value = VALUE_FLAGS.contains(&name);
        // Short flags (-h, -V) stay; so do things that are not names (-5).
        // Unknown long names are rewritten too, so clap reports `--name`
        // (and suggests the flag meant) rather than its first letter.
        let long_name = name.len() > 1 && name.starts_with(|c: char| c.is_ascii_alphabetic());
        value_next = known_value && !has_value;
        if text.starts_with("--") || !long_name {
            out.push(arg);
            continue;
        }
        out.push(format!("-{text}").into());
    }
    out.extend(args);
    out
}

/// The standalone server's flags, shared by `weir-agent` (flattened into its
/// command line) and the tests ([`parse`]).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ServeFlags {
    /// Address to listen on. katran-server's default is "" (every interface);
    /// weir's is loopback because the API changes the node's datapath: binding
    /// elsewhere must be the operator's explicit choice. "" binds every interface.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0: any free port, printed at start-up).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// TLS certificate chain (PEM); with --tls-key, serves HTTPS only.
    #[arg(long, value_name = "FILE", requires = "tls_key", value_parser = non_empty_path)]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert", value_parser = non_empty_path)]
    pub tls_key: Option<PathBuf>,

    /// CA bundle (PEM) for mTLS: every client must present a certificate
    /// signed by one of these CAs, or the TLS handshake fails.
    #[arg(long, value_name = "FILE", requires = "tls_cert", value_parser = non_empty_path)]
    pub tls_client_ca: Option<PathBuf>,

    /// Answer CORS requests (preflights and headers) for --cors-origins.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub cors: bool,

    /// Comma-separated origins allowed by CORS ("*": any origin).
    #[arg(long, value_name = "ORIGINS", default_value = "*", value_parser = cors_origins)]
    pub cors_origins: CorsOrigins,

    /// Time to receive a request (head and body) once it begins; bare numbers
    /// are seconds, or a Go duration (30s, 1m). 0: no limit.
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = duration::parse)]
    pub read_timeout: Duration,

    /// Time a response may take to be written: a write the client leaves
    /// undrained this long closes the connection. Handlers are never cut
    /// short (a slow change is applied and answered). 0: no limit.
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = duration::parse)]
    pub write_timeout: Duration,

    /// Time a keep-alive connection may wait for its next request. 0: the
    /// read timeout (as in Go's net/http).
    #[arg(long, value_name = "DURATION", default_value = "120", value_parser = duration::parse)]
    pub idle_timeout: Duration,

    /// Do not log requests.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub no_logging: bool,

    /// Do not turn handler panics into 500 INTERNAL_ERROR: the connection is dropped instead.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub no_recovery: bool,

    /// Create the balancer at start-up from this JSON file (the body of POST /api/v1/lb/create).
    #[arg(long, value_name = "FILE", value_parser = non_empty_path)]
    pub config: Option<PathBuf>,

    /// Source networks allowed to use the API (repeatable or comma-separated;
    /// a bare address is one host). Giving any replaces the loopback default;
    /// 0.0.0.0/0,::/0 allows every source.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', default_values = ["127.0.0.0/8", "::1/128"],
          value_parser = cidr)]
    pub allow_cidr: Vec<IpNet>,

    /// File holding a bearer token: every request but /health and
    /// /health/ready must send `Authorization: Bearer <token>`.
    #[arg(long, value_name = "FILE", value_parser = non_empty_path)]
    pub token_file: Option<PathBuf>,

    /// Largest accepted request body, in bytes, 1 to 1048576 (larger bodies: 413).
    #[arg(long, value_name = "BYTES", default_value_t = MAX_BODY_LIMIT,
          value_parser = clap::value_parser!(u64).range(1..=MAX_BODY_LIMIT))]
    pub body_limit: u64,

    /// Connections the API serves at once (1 to 65536); more are refused at
    /// accept with 503 TOO_MANY_CONNECTIONS. The metrics listener has its own
    /// cap of the same size.
    #[arg(long, value_name = "N", default_value_t = super::listener::DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,

    /// Refuse every request that changes the balancer (403 READ_ONLY).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub read_only: bool,

    /// Serve Prometheus metrics on GET /metrics at this address (e.g.
    /// 127.0.0.1:9478). Without it, no metrics listener is opened.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Also report how many connection-table entries are used. Counting walks
    /// the whole table (one syscall per entry) under the balancer lock, so it
    /// is off by default.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub metrics_conn_table_usage: bool,

    /// Where a balancer (not in testing mode) pins its program link and maps
    /// on bpffs, so a restarted agent adopts them: `<pin-root>/<interface>/`.
    #[arg(long, value_name = "DIR", default_value = crate::dataplane::pin::DEFAULT_PIN_ROOT)]
    pub pin_root: std::path::PathBuf,

    /// Where a balancer saves its control-plane state (VIPs, reals, weights)
    /// beside its pins: `<state-dir>/<interface>.json`.
    #[arg(long, value_name = "DIR", default_value = "/run/weir")]
    pub state_dir: std::path::PathBuf,

    /// Run weir's prober: every balancer this agent creates checks its
    /// reals as their VIPs' health checks say (PUT /api/v1/vips/healthcheck),
    /// and new reals start unhealthy until probes promote them (katran-server
    /// with a health checker). Always on in cluster mode.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub prober: bool,

    #[command(flatten, next_help_heading = "Cluster mode")]
    pub cluster: ClusterFlags,
}

/// Cluster mode: the agent creates its balancer at start-up and programs it
/// from the cluster's VirtualServices and RealServers (see [`crate::cluster`]).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ClusterFlags {
    /// Program the datapath from the Kubernetes API (in-cluster service
    /// account or KUBECONFIG). The balancer is created at start-up from
    /// --interface, --default-mac, --xdp-mode and --config.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    pub cluster: bool,

    /// The Kubernetes Node this agent runs on (its labels select
    /// VirtualServices; its BalancerNode is named after it).
    #[arg(long, value_name = "NAME", env = "NODE_NAME", requires = "cluster")]
    pub node_name: Option<String>,

    /// The interface to attach to (`main_interface` of --config).
    #[arg(long, value_name = "IF", requires = "cluster")]
    pub interface: Option<String>,

    /// The next hop's MAC address, destination of encapsulated packets
    /// (`default_mac` of --config); `gateway`: the MAC of --interface's IPv4
    /// default gateway, resolved at start-up (one setting for nodes behind
    /// different routers).
    #[arg(long, value_name = "MAC", requires = "cluster")]
    pub default_mac: Option<String>,

    /// How to attach XDP: auto (the kernel's choice: native when the driver
    /// supports XDP, else generic), native, or generic. Default: --config's
    /// `xdp_attach_flags`, else auto.
    #[arg(long, value_name = "MODE", value_enum, requires = "cluster")]
    pub xdp_mode: Option<XdpMode>,
}

/// `--xdp-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    Auto,
    Native,
    Generic,
}

impl XdpMode {
    /// The `xdp_attach_flags` of `/lb/create` that ask for this mode.
    pub fn attach_flags(self) -> u32 {
        match self {
            XdpMode::Auto => 0,
            XdpMode::Generic => 1 << 1,
            XdpMode::Native => 1 << 2,
        }
    }
}

/// The origins of `--cors-origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (answered with `Access-Control-Allow-Origin: *`).
    Any,
    /// Exactly these origins (answered with the request's origin when listed).
    List(Vec<HeaderValue>),
}

/// Parses the server flags of a command line (program name first), both
/// spellings accepted. For tests and tools; `weir-agent` flattens [`ServeFlags`]
/// into its own command.
pub fn parse<I, T>(args: I) -> Result<ServeFlags, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    use clap::{Args, FromArgMatches};
    let command = ServeFlags::augment_args(clap::Command::new("weir-agent"));
    let matches = command.try_get_matches_from(normalize_args(args))?;
    ServeFlags::from_arg_matches(&matches)
}

impl ServeFlags {
    /// The idle timeout in effect: Go's net/http uses the read timeout when it is 0.
    pub fn effective_idle_timeout(&self) -> Duration {
        if self.idle_timeout.is_zero() {
            self.read_timeout
        } else {
            self.idle_timeout
        }
    }
}

/// Go's `strconv.ParseBool`: 1 t T TRUE true True, 0 f F FALSE false False.
fn go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (use true or false)")),
    }
}

fn non_empty_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("empty path: omit the flag instead".to_owned());
    }
    Ok(PathBuf::from(text))
}

/// A network (`10.0.0.0/8`) or one address (`10.1.2.3` = `10.1.2.3/32`).
fn cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address"))
}

fn cors_origins(text: &str) -> Result<CorsOrigins, String> {
    if text.trim() == "*" {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::new();
    for origin in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        // An origin is scheme://host[:port], nothing after: browsers send exactly that.
        let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty() && !rest.is_empty() && !rest.contains('/') && !rest.contains('*')
        });
        if !valid {
            return Err(format!("{origin:?} is not an origin (scheme://host[:port], or * alone)"));
        }
        origins.push(HeaderValue::from_str(origin).map_err(|_| format!("{origin:?} is not a valid header value"))?);
    }
    if origins.is_empty() {
        return Err("no origin given (use * for any)".to_owned());
    }
    Ok(CorsOrigins::List(origins))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().copied()).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn rewrites_single_dash_long_names_only() {
        assert_eq!(
            strings(&["w", "-port", "80", "-host=::1", "-cors", "-h", "--read-only", "-x", "-typo=1", "-5"]),
            ["w", "--port", "80", "--host=::1", "--cors", "-h", "--read-only", "-x", "--typo=1", "-5"]
        );
    }

    #[test]
    fn values_and_subcommands_are_left_alone() {
        assert_eq!(strings(&["w", "-token-file", "-cors", "-cors"]), ["w", "--token-file", "-cors", "--cors"]);
        assert_eq!(strings(&["w", "--host", "-port", "-port", "1"]), ["w", "--host", "-port", "--port", "1"]);
        assert_eq!(strings(&["w", "decap", "-port", "1"]), ["w", "decap", "-port", "1"]);
        assert_eq!(strings(&["w", "--", "-port"]), ["w", "--", "-port"]);
    }

    #[test]
    fn go_booleans() {
        assert_eq!(go_bool("T"), Ok(true));
        assert_eq!(go_bool("0"), Ok(false));
        assert!(go_bool("yes").is_err());
    }

    #[test]
    fn cidrs_and_addresses() {
        assert_eq!(cidr("10.1.2.3/8"), Ok("10.0.0.0/8".parse().unwrap()));
        assert_eq!(cidr("10.1.2.3"), Ok("10.1.2.3/32".parse().unwrap()));
        assert_eq!(cidr("::1"), Ok("::1/128".parse().unwrap()));
        assert!(cidr("10.0.0.0/33").is_err());
    }

    #[test]
    fn origins() {
        assert_eq!(cors_origins("*"), Ok(CorsOrigins::Any));
        assert_eq!(
            cors_origins("http://localhost:3000, https://example.com"),
            Ok(CorsOrigins::List(vec![
                HeaderValue::from_static("http://localhost:3000"),
                HeaderValue::from_static("https://example.com")
            ]))
        );
        assert!(cors_origins("example.com").is_err());
        assert!(cors_origins("https://example.com/path").is_err());
        assert!(cors_origins(" , ").is_err());
    }
}
