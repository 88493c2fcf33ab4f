//! One probe of one real.
//!
//! A probe is sent to a [`Target`]: an address (the VIP and check port, so
//! that the healthcheck program tunnels it to the real its mark names; or a
//! real's own address) and the socket mark the healthcheck program knows the
//! real by (0: no mark, the probe goes where routing sends it).

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::half_open;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A listener answers a SYN (a half-open handshake, [`super::half_open`]).
    Tcp,
    /// An HTTP GET answers the expected status.
    Http(HttpCheck),
    /// The same over TLS.
    Https { http: HttpCheck, skip_tls_verify: bool },
    /// A UDP datagram gets a reply.
    Udp(UdpCheck),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    pub path: String,
    pub expected_status: u16,
    /// The Host header (and, for HTTPS, the SNI name); default: the address.
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpCheck {
    /// The datagram sent.
    pub payload: Vec<u8>,
    /// The reply expected; `None`: any reply passes.
    pub expect: Option<Vec<u8>>,
}

impl Check {
    /// The check's type, as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Tcp => "tcp",
            Check::Http(_) => "http",
            Check::Https { .. } => "https",
            Check::Udp(_) => "udp",
        }
    }
}

/// Where a probe goes and how it is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    /// SO_MARK of the probe's socket; 0 sets none.
    pub mark: u32,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The real refused (a reset, for a TCP probe's SYN).
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("socket: {0}")]
    Socket(std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("status {got}, expected {want}")]
    Status { got: u16, want: u16 },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("UDP: {0}")]
    Udp(std::io::Error),
    #[error("UDP reply {got} bytes, not the expected reply")]
    WrongReply { got: usize },
}

/// Probes `target` once; the whole probe (handshake, request, answer) must
/// finish within `timeout`. A TCP probe here has a raw socket of its own
/// ([`half_open::probe_once`]); the prober's scheduler drives one for all
/// its TCP probes and calls this for the others.
pub async fn probe(check: &Check, target: Target, timeout: Duration) -> Result<(), ProbeError> {
    // The connected probes' futures are boxed: hyper's and rustls's are
    // kilobytes, and unboxed every probe's future would be as large.
    let connected: Pin<Box<dyn Future<Output = Result<(), ProbeError>> + Send + '_>> = match check {
        Check::Tcp => return half_open::probe_once(target, timeout).await,
        Check::Http(http) => Box::pin(async move { get(connect(target).await?, http, target).await }),
        Check::Https { http, skip_tls_verify } => Box::pin(https(http, *skip_tls_verify, target)),
        Check::Udp(udp) => Box::pin(udp_probe(udp, target)),
    };
    match tokio::time::timeout(timeout, connected).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

async fn https(http: &HttpCheck, skip_tls_verify: bool, target: Target) -> Result<(), ProbeError> {
    let stream = connect(target).await?;
    let name = server_name(http, target)?;
    let tls =
        tls_connector(skip_tls_verify)?.connect(name, stream).await.map_err(|e| ProbeError::Tls(e.to_string()))?;
    get(tls, http, target).await
}

/// A TCP connection to the target from a socket carrying its mark.
///
/// The socket lingers 0 s: closing it sends a reset rather than a FIN, as
/// HAProxy's checks do, so a probe ends in one packet, not a FIN exchange,
/// and leaves no TIME_WAIT socket behind on the real (at 10,000 probes a
/// second, 600,000 of them otherwise). prober_scale, when TCP probes still
/// connected: the agent's CPU 49.5% → 46.7% of a core, the reals' 29.5% → 25%.
async fn connect(target: Target) -> Result<TcpStream, ProbeError> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ProbeError::Socket)?;
    // nix, not tokio's set_linger: tokio deprecates it because a linger
    // above 0 blocks the thread in close; 0 never blocks.
    let reset = libc::linger { l_onoff: 1, l_linger: 0 };
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Linger, &reset)
        .map_err(|e| ProbeError::Socket(std::io::Error::from(e)))?;
    mark(&socket, target.mark)?;
    socket.connect(target.addr).await.map_err(ProbeError::Connect)
}

fn mark(socket: &impl AsFd, mark: u32) -> Result<(), ProbeError> {
    if mark == 0 {
        return Ok(());
    }
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::Mark, &mark)
        .map_err(|e| ProbeError::Socket(std::io::Error::from(e)))
}

/// `GET path` over `io`; passes when the status is the expected one.
/// Redirects are not followed (a 301 is a 301, as in katran's checker).
async fn get<T>(io: T, http: &HttpCheck, target: Target) -> Result<(), ProbeError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| ProbeError::Http(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let host = http.host.clone().unwrap_or_else(|| host_of(target.addr));
    let request = hyper::Request::get(http.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, concat!("weir-agent/", env!("CARGO_PKG_VERSION"), " healthcheck"))
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeError::Http(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| ProbeError::Http(e.to_string()))?;
    conn.abort();
    let got = response.status().as_u16();
    if got == http.expected_status {
        Ok(())
    } else {
        Err(ProbeError::Status { got, want: http.expected_status })
    }
}

fn host_of(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

fn server_name(http: &HttpCheck, target: Target) -> Result<rustls::pki_types::ServerName<'static>, ProbeError> {
    match &http.host {
        Some(host) => rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| ProbeError::Tls(format!("host {host:?}: {e}"))),
        None => Ok(rustls::pki_types::ServerName::IpAddress(target.addr.ip().into())),
    }
}

/// The connector of HTTPS probes, built once per `skip_verify` value: building
/// one reads the system's whole CA bundle, which no probe should pay for. (A
/// CA bundle changed later is seen after a restart.)
fn tls_connector(skip_verify: bool) -> Result<tokio_rustls::TlsConnector, ProbeError> {
    static VERIFYING: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> = std::sync::OnceLock::new();
    static ANY_CERTIFICATE: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    let cell = if skip_verify { &ANY_CERTIFICATE } else { &VERIFYING };
    cell.get_or_init(|| build_tls_connector(skip_verify)).clone().map_err(ProbeError::Tls)
}

fn build_tls_connector(skip_verify: bool) -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// `skip_tls_verify`: any certificate passes; the handshake's signatures
/// are still checked, so the peer holds the key of what it presented.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends the payload and waits for a reply (the caller's timeout bounds it).
async fn udp_probe(udp: &UdpCheck, target: Target) -> Result<(), ProbeError> {
    let local: SocketAddr = match target.addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(ProbeError::Socket)?;
    mark(&socket, target.mark)?;
    socket.connect(target.addr).await.map_err(ProbeError::Udp)?;
    socket.send(&udp.payload).await.map_err(ProbeError::Udp)?;
    let mut reply = vec![0u8; 2048];
    let n = socket.recv(&mut reply).await.map_err(ProbeError::Udp)?;
    match &udp.expect {
        Some(want) if reply[..n] != want[..] => Err(ProbeError::WrongReply { got: n }),
        _ => Ok(()),
    }
}
