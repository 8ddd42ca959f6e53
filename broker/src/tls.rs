//! TLS, as nsqd offers it: a client upgrades its TCP connection after
//! IDENTIFY (`tls_v1`), and the HTTP API may listen for HTTPS too. One rustls
//! server config, built at startup from the config's PEM files, serves both.
//!
//! nsqd's client-certificate policies map onto rustls verifiers: `none`
//! asks for no certificate, `require-verify` requires one that chains to
//! `tls_root_ca_file`, and `require` requires one but checks only that the
//! client holds its key (see [`AnyClientCert`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use triage_config::{BrokerConfig, TlsClientAuthPolicy, TlsMinVersion};

/// Why TLS could not be set up; each names the config key at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot be read: {reason}")]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("holds no {what} in PEM form")]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{reason}")]
    Rejected { key: &'static str, reason: String },
}

impl TlsError {
    /// The config key whose value is at fault.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::File { key, .. }
            | TlsError::Empty { key, .. }
            | TlsError::Rejected { key, .. } => key,
        }
    }

    /// As a config error naming the key and the file at fault.
    pub fn into_config_error(self) -> triage_config::ConfigError {
        triage_config::ConfigError::Invalid {
            key: self.key().to_owned(),
            value: self.value(),
            reason: self.to_string(),
            origin: None,
        }
    }

    /// The file at fault, quoted, if the error is about one.
    pub fn value(&self) -> String {
        match self {
            TlsError::File { path, .. } | TlsError::Empty { path, .. } => {
                format!("{:?}", path.display().to_string())
            }
            TlsError::Rejected { .. } => "(the TLS settings)".to_owned(),
        }
    }
}

/// The server config for the config's certificate, or `None` when TLS is
/// off. `TlsAcceptor::from` it where a handshake is needed.
///
/// # Errors
/// A file that cannot be read or holds no certificate or key, a key that
/// does not match, a CA file with no usable certificate.
pub fn server_config(config: &BrokerConfig) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs("tls_cert", cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::File {
        key: "tls_key",
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = match config.tls_min_version {
        TlsMinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let rejected = |key: &'static str| {
        move |e: rustls::Error| TlsError::Rejected {
            key,
            reason: e.to_string(),
        }
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(rejected("tls_min_version"))?;
    let builder = match config.tls_client_auth_policy {
        TlsClientAuthPolicy::None => builder.with_no_client_auth(),
        TlsClientAuthPolicy::Require => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert {
                algorithms: provider.signature_verification_algorithms,
            }))
        }
        TlsClientAuthPolicy::RequireVerify => {
            let Some(ca_path) = &config.tls_root_ca_file else {
                return Err(TlsError::Rejected {
                    key: "tls_client_auth_policy",
                    reason: "require-verify needs tls_root_ca_file".into(),
                });
            };
            let mut roots = RootCertStore::empty();
            for cert in read_certs("tls_root_ca_file", ca_path)? {
                roots.add(cert).map_err(rejected("tls_root_ca_file"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rejected {
                    key: "tls_root_ca_file",
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(rejected("tls_key"))?;
    Ok(Some(Arc::new(server)))
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key,
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// nsqd's `require` (Go's `RequireAnyClientCert`): a client must present a
/// certificate and prove it holds its key, but the certificate is not
/// checked against any CA.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What `/stats` reports of a client's TLS session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: &'static str,
    pub cipher_suite: String,
    /// A verified (or, under `require`, presented) client certificate.
    pub client_certificate: bool,
    /// Its subject's common name (empty without one), which auth servers
    /// are told as `common_name`, as nsqd tells them.
    pub common_name: String,
}

/// The subject common name of a DER certificate, or "" if it has none or
/// does not parse.
pub fn common_name(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der)
        .ok()
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_owned))
        })
        .unwrap_or_default()
}

impl TlsInfo {
    pub fn of(connection: &rustls::ServerConnection) -> TlsInfo {
        let version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2",
            _ => "",
        };
        TlsInfo {
            version,
            cipher_suite: connection
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            client_certificate: connection
                .peer_certificates()
                .is_some_and(|certs| !certs.is_empty()),
            common_name: connection
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|cert| common_name(cert))
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_read_from_the_subject() {
        let mut params =
            rcgen::CertificateParams::new(vec!["worker-1.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "worker-1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()), "worker-1");
        assert_eq!(common_name(b"not a certificate"), "");
    }
}
