//! HTTPS: loads the PEM certificate chain and private key named by `TLS_CERT` / `TLS_KEY` into a rustls server
//! configuration (ring provider, TLS 1.2 and 1.3). Any problem is a start-up error that names the file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// The rustls configuration for `cert` (PEM chain, leaf first) and `key` (PEM PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ConfigError(format!("TLS_CERT {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError(format!("TLS_CERT {}: not a PEM certificate chain: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!("TLS_CERT {}: no certificate found in the PEM file", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ConfigError(format!("TLS_KEY {}: no usable PEM private key: {e}", key.display())))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError(format!("TLS_CERT/TLS_KEY do not form a usable pair: {e}")))
}
