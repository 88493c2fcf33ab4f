//! The node agent's configuration as the operator reads it (`--agent-config FILE`, a YAML
//! file the Helm chart mounts from a ConfigMap): [`AgentConfig`], its defaults, and
//! [`AgentConfig::validate`], which names the field and the value of every mistake.
//!
//! Unknown fields are errors (`deny_unknown_fields`): a misspelt `tolerations` would
//! otherwise silently schedule the agent nowhere near the tainted nodes it was meant for.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use serde::{Deserialize, Serialize};

/// A mistake in the agent configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading the agent configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, or not the shape of [`AgentConfig`] (unknown or missing field, wrong type).
    #[error("parsing the agent configuration: {0}")]
    Parse(#[source] serde_yaml::Error),
    /// A field has a value the agent or Kubernetes would refuse.
    #[error("agent configuration: {field} {value:?}: {reason}")]
    Invalid { field: &'static str, value: String, reason: String },
    /// Neither `namespace` nor the operator's own namespace (`POD_NAMESPACE`) is known.
    #[error("agent configuration: no namespace (set `namespace`, or run the operator with POD_NAMESPACE)")]
    NoNamespace,
}

/// How the agent attaches its XDP program (`--xdp-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode when the NIC supports it, else generic.
    #[default]
    Auto,
    /// Driver mode only: fails on NICs without XDP support.
    Native,
    /// Generic (skb) mode: any NIC, slower.
    Generic,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// The container's image pull policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// A key of a Secret, mounted as a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    pub name: String,
    pub key: String,
}

/// The agent's REST API (katran-server's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address (`--host`). The pods use the host's network, so this is a node address;
    /// loopback by default because the API changes the node's datapath.
    pub host: String,
    pub port: u16,
    /// Source networks allowed to call the API (`--allow-cidr`); empty: the agent's default
    /// (loopback only).
    pub allow_cidrs: Vec<String>,
    pub read_only: bool,
    /// The bearer token every request must carry (`--token-file`).
    pub token_secret: Option<SecretKey>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): serve HTTPS only.
    pub tls_secret: Option<String>,
    /// A CA bundle for mTLS (`--tls-client-ca`); needs `tlsSecret`.
    pub client_ca_secret: Option<SecretKey>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            allow_cidrs: Vec::new(),
            read_only: false,
            token_secret: None,
            tls_secret: None,
            client_ca_secret: None,
        }
    }
}

/// The agent's metrics listener (`--metrics-addr 0.0.0.0:<port>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub port: u16,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { port: 9478 }
    }
}

/// Everything the operator needs to render the node agent's DaemonSet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the DaemonSet lives; `None`: the operator's own namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default = "default_name")]
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    #[serde(default = "default_name")]
    pub service_account_name: String,
    /// The NIC the XDP program attaches to.
    pub interface: String,
    /// The next hop's MAC for encapsulated packets (the router's, typically).
    pub default_mac: String,
    #[serde(default)]
    pub xdp_mode: XdpMode,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub resources: ResourceRequirements,
    #[serde(default)]
    pub priority_class_name: Option<String>,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Host path of bpffs; the agent pins under `<bpffsPath>/weir`.
    #[serde(default = "default_bpffs_path")]
    pub bpffs_path: String,
    /// Host path of the agent's state files (they survive agent restarts, as the pins do).
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// `RUST_LOG` of the agent.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Appended to the agent's arguments as they are.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

fn default_name() -> String {
    "weir-agent".to_owned()
}
fn default_bpffs_path() -> String {
    "/sys/fs/bpf".to_owned()
}
fn default_state_dir() -> String {
    "/run/weir".to_owned()
}
fn default_log_level() -> String {
    "info".to_owned()
}

fn invalid(field: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, value: value.into(), reason: reason.into() }
}

impl AgentConfig {
    /// Parses and validates a configuration.
    pub fn from_yaml(text: &str) -> Result<AgentConfig, ConfigError> {
        let config: AgentConfig = serde_yaml::from_str(text).map_err(ConfigError::Parse)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        AgentConfig::from_yaml(&text)
    }

    /// The namespace of the DaemonSet: `namespace`, else the operator's own (`POD_NAMESPACE`).
    pub fn resolve_namespace(&self, own: Option<String>) -> Result<String, ConfigError> {
        self.namespace.clone().or(own).filter(|ns| !ns.is_empty()).ok_or(ConfigError::NoNamespace)
    }

    /// Checks what serde cannot: the first mistake found, naming its field and value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(ns) = &self.namespace {
            dns_label("namespace", ns)?;
        }
        dns_subdomain("name", &self.name)?;
        if self.image.trim().is_empty() || self.image.contains(char::is_whitespace) {
            return Err(invalid("image", &self.image, "must be a non-empty image reference without spaces"));
        }
        for s in &self.image_pull_secrets {
            dns_subdomain("imagePullSecrets", s)?;
        }
        dns_subdomain("serviceAccountName", &self.service_account_name)?;
        interface(&self.interface)?;
        mac(&self.default_mac)?;
        if let Some(p) = &self.priority_class_name {
            dns_subdomain("priorityClassName", p)?;
        }
        self.validate_api()?;
        if self.metrics.port == 0 {
            return Err(invalid("metrics.port", "0", "must be 1-65535"));
        }
        if self.metrics.port == self.api.port {
            return Err(invalid(
                "metrics.port",
                self.metrics.port.to_string(),
                "equals api.port; the pods share the host's network, so the two listeners need two ports",
            ));
        }
        absolute("bpffsPath", &self.bpffs_path)?;
        absolute("stateDir", &self.state_dir)?;
        if self.log_level.trim().is_empty() {
            return Err(invalid("logLevel", &self.log_level, "must not be empty (e.g. info, or weir_agent=debug)"));
        }
        Ok(())
    }

    fn validate_api(&self) -> Result<(), ConfigError> {
        let api = &self.api;
        if !api.host.is_empty() && api.host.parse::<IpAddr>().is_err() {
            return Err(invalid("api.host", &api.host, "must be an IP address (\"\" listens on every address)"));
        }
        if api.port == 0 {
            return Err(invalid("api.port", "0", "must be 1-65535"));
        }
        for c in &api.allow_cidrs {
            if c.parse::<ipnet::IpNet>().is_err() && c.parse::<IpAddr>().is_err() {
                return Err(invalid("api.allowCidrs", c, "must be a CIDR (10.0.0.0/8) or an address"));
            }
        }
        if let Some(s) = &api.token_secret {
            secret_key("api.tokenSecret", s)?;
        }
        if let Some(s) = &api.tls_secret {
            dns_subdomain("api.tlsSecret", s)?;
        }
        if let Some(s) = &api.client_ca_secret {
            secret_key("api.clientCaSecret", s)?;
            if api.tls_secret.is_none() {
                return Err(invalid("api.clientCaSecret", &s.name, "needs api.tlsSecret (mTLS is a TLS option)"));
            }
        }
        Ok(())
    }
}

/// A Linux interface name: 1-15 bytes (IFNAMSIZ - 1), no '/', no whitespace.
fn interface(name: &str) -> Result<(), ConfigError> {
    let bad = name.is_empty() || name.len() > 15 || name.contains(|c: char| c == '/' || c.is_whitespace());
    if bad || name == "." || name == ".." {
        return Err(invalid("interface", name, "must be a Linux interface name (1-15 characters, no '/' or spaces)"));
    }
    Ok(())
}

/// Six hex octets separated by ':' or '-'; a unicast address (a next hop cannot be multicast). Or
/// `gateway`: each agent resolves its interface's default gateway at start-up.
fn mac(text: &str) -> Result<(), ConfigError> {
    if text == "gateway" {
        return Ok(());
    }
    let Ok(mac) = text.parse::<weir_crds::mac::Mac>() else {
        return Err(invalid("defaultMac", text, "must be a MAC address like 02:00:00:00:00:01, or gateway"));
    };
    if mac.is_multicast() {
        return Err(invalid("defaultMac", text, "is a multicast/broadcast address; the next hop needs a unicast one"));
    }
    if mac.is_zero() {
        return Err(invalid("defaultMac", text, "is the zero address"));
    }
    Ok(())
}

fn absolute(field: &'static str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.trim_end_matches('/').is_empty() {
        return Err(invalid(field, path, "must be an absolute host path other than /"));
    }
    Ok(())
}

fn secret_key(field: &'static str, s: &SecretKey) -> Result<(), ConfigError> {
    dns_subdomain(field, &s.name)?;
    // The key becomes a file name under the mount.
    let ok = !s.key.is_empty()
        && s.key != "."
        && s.key != ".."
        && s.key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(invalid(field, &s.key, "key must be a Secret key ([-._a-zA-Z0-9]+)"));
    }
    Ok(())
}

/// RFC 1123 label: 1-63 of [a-z0-9-], alphanumeric at both ends.
fn dns_label(field: &'static str, s: &str) -> Result<(), ConfigError> {
    if !is_label(s) {
        return Err(invalid(field, s, "must be a DNS label (lowercase letters, digits, '-'; at most 63)"));
    }
    Ok(())
}

/// RFC 1123 subdomain: at most 253 characters, labels separated by '.'.
fn dns_subdomain(field: &'static str, s: &str) -> Result<(), ConfigError> {
    if s.len() > 253 || !s.split('.').all(is_label) {
        return Err(invalid(field, s, "must be a DNS subdomain (lowercase letters, digits, '-', '.')"));
    }
    Ok(())
}

fn is_label(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty() && s.len() <= 63 && s.chars().all(|c| edge(c) || c == '-') && s.starts_with(edge) && s.ends_with(edge)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "image: ghcr.io/weir-lb/weir-agent:0.1.0\ninterface: eth0\ndefaultMac: \"02:00:00:00:00:01\"\n";

    fn with(extra: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_yaml(&format!("{MINIMAL}{extra}"))
    }

    fn message(r: Result<AgentConfig, ConfigError>) -> String {
        r.expect_err("must be refused").to_string()
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let c = with("").unwrap();
        assert_eq!(c.name, "weir-agent");
        assert_eq!(c.service_account_name, "weir-agent");
        assert_eq!(c.image_pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(c.xdp_mode, XdpMode::Auto);
        assert_eq!(c.api, ApiConfig::default());
        assert_eq!((c.api.host.as_str(), c.api.port), ("127.0.0.1", 8080));
        assert_eq!(c.metrics.port, 9478);
        assert_eq!((c.bpffs_path.as_str(), c.state_dir.as_str()), ("/sys/fs/bpf", "/run/weir"));
        assert_eq!(c.log_level, "info");
        assert_eq!(c.namespace, None);
        assert!(c.priority_class_name.is_none() && c.tolerations.is_empty() && c.extra_args.is_empty());
    }

    #[test]
    fn full_config_parses() {
        let c = with(
            "namespace: weir-system\nimagePullPolicy: Always\nimagePullSecrets: [regcred]\nxdpMode: native\n\
             nodeSelector: {lb: \"yes\"}\ntolerations: [{key: lb, operator: Exists, effect: NoSchedule}]\n\
             resources: {limits: {memory: 256Mi}}\npriorityClassName: system-node-critical\n\
             api:\n  host: \"0.0.0.0\"\n  port: 9000\n  allowCidrs: [10.0.0.0/8, 192.168.1.1]\n  readOnly: true\n\
             \x20 tokenSecret: {name: weir-agent-token, key: token}\n  tlsSecret: weir-agent-tls\n\
             \x20 clientCaSecret: {name: weir-ca, key: ca.crt}\nmetrics: {port: 9100}\nlogLevel: debug\n\
             extraArgs: [--idle-timeout, \"60\"]\n",
        )
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("weir-system"));
        assert_eq!(c.xdp_mode, XdpMode::Native);
        assert_eq!(c.tolerations[0].key.as_deref(), Some("lb"));
        assert_eq!(c.api.token_secret, Some(SecretKey { name: "weir-agent-token".into(), key: "token".into() }));
        assert_eq!(c.extra_args, ["--idle-timeout", "60"]);
    }

    #[test]
    fn unknown_fields_are_errors() {
        let m = message(with("tolerationz: []\n"));
        assert!(m.contains("unknown field `tolerationz`"), "{m}");
        let m = message(with("api: {prot: 80}\n"));
        assert!(m.contains("unknown field `prot`"), "{m}");
    }

    #[test]
    fn required_fields_are_named() {
        let m = message(AgentConfig::from_yaml("interface: eth0\ndefaultMac: \"02:00:00:00:00:01\"\n"));
        assert!(m.contains("missing field `image`"), "{m}");
        let m = message(AgentConfig::from_yaml("image: a:1\ndefaultMac: \"02:00:00:00:00:01\"\n"));
        assert!(m.contains("missing field `interface`"), "{m}");
        let m = message(AgentConfig::from_yaml("image: a:1\ninterface: eth0\n"));
        assert!(m.contains("missing field `defaultMac`"), "{m}");
        let m = message(AgentConfig::from_yaml("image: \"\"\ninterface: eth0\ndefaultMac: \"02:00:00:00:00:01\"\n"));
        assert!(m.contains("image \"\""), "{m}");
    }

    #[test]
    fn default_mac_may_be_gateway() {
        let config = AgentConfig::from_yaml("image: a:1\ninterface: eth0\ndefaultMac: gateway\n").unwrap();
        assert_eq!(config.default_mac, "gateway");
        let m = message(AgentConfig::from_yaml("image: a:1\ninterface: eth0\ndefaultMac: gatewey\n"));
        assert!(m.contains("or gateway"), "{m}");
    }

    #[test]
    fn bad_values_name_field_and_value() {
        let cases = [
            ("defaultMac: \"02:00:00:00:00\"", "defaultMac \"02:00:00:00:00\""),
            ("defaultMac: \"zz:00:00:00:00:01\"", "defaultMac \"zz:00:00:00:00:01\""),
            ("defaultMac: \"ff:ff:ff:ff:ff:ff\"", "multicast"),
            ("interface: \"this-name-is-too-long\"", "interface \"this-name-is-too-long\""),
            ("api: {port: 0}", "api.port \"0\""),
            ("metrics: {port: 8080}", "equals api.port"),
            ("api: {host: localhost}", "api.host \"localhost\""),
            ("api: {allowCidrs: [10.0.0.0/33]}", "api.allowCidrs \"10.0.0.0/33\""),
            ("api: {clientCaSecret: {name: ca, key: ca.crt}}", "needs api.tlsSecret"),
            ("api: {tokenSecret: {name: t, key: ../x}}", "api.tokenSecret \"../x\""),
            ("bpffsPath: sys/fs/bpf", "bpffsPath \"sys/fs/bpf\""),
            ("name: Weir", "name \"Weir\""),
            ("namespace: \"\"", "namespace \"\""),
        ];
        for (yaml, expected) in cases {
            // The later key wins in none of these: each replaces a MINIMAL key or adds a new one.
            let text = MINIMAL
                .lines()
                .filter(|l| !yaml.starts_with(l.split(':').next().unwrap_or_default()))
                .map(|l| format!("{l}\n"))
                .collect::<String>();
            let m = message(AgentConfig::from_yaml(&format!("{text}{yaml}\n")));
            assert!(m.contains(expected), "{yaml}: {m}");
        }
    }

    #[test]
    fn bad_modes_are_errors() {
        let m = message(with("xdpMode: offload\n"));
        assert!(m.contains("xdpMode") && m.contains("unknown variant `offload`"), "{m}");
        let m = message(with("imagePullPolicy: Sometimes\n"));
        assert!(m.contains("unknown variant `Sometimes`"), "{m}");
    }

    #[test]
    fn namespace_comes_from_the_config_or_the_operator() {
        let c = with("").unwrap();
        assert_eq!(c.resolve_namespace(Some("ops".into())).unwrap(), "ops");
        assert!(matches!(c.resolve_namespace(None), Err(ConfigError::NoNamespace)));
        let c = with("namespace: weir-system\n").unwrap();
        assert_eq!(c.resolve_namespace(Some("ops".into())).unwrap(), "weir-system");
    }
}
