//! TLS for the API listener: rustls with the ring provider (no aws-lc, no
//! OpenSSL), HTTP/2 and HTTP/1.1 offered by ALPN.
//!
//! With a client CA (`-tls-client-ca`), client certificates are *required* and
//! verified against it ([`WebPkiClientVerifier`]): a client without one, or with
//! one from another CA, fails the handshake. (katran-server loads the CA but
//! never asks for a certificate; weir does not copy that.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// What a TLS listener is made from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate from one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS configuration could not be built; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    pub path: String,
    pub reason: String,
}

impl TlsError {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self { path: path.display().to_string(), reason: reason.into() }
    }
}

/// Loads the files and builds the acceptor.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(&files.cert, e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_path)? {
                roots.add(cert).map_err(|e| TlsError::new(ca_path, format!("not a usable CA certificate: {e}")))?;
            }
            // The builder's default requires a certificate from every client;
            // `allow_unauthenticated` is deliberately never called.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::new(ca_path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::new(&files.key, format!("does not match the certificate or is unusable: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::new(path, e.to_string()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::new(path, "no PRIVATE KEY block found (PKCS#8, PKCS#1 or SEC1)"),
        e => TlsError::new(path, format!("bad PEM: {e}")),
    })
}
