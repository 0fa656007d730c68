//! TLS for tokio-postgres with rustls, verifying the server the way libpq's `sslmode` says:
//!
//! | mode | encrypted | chain checked against `sslrootcert` | host name checked |
//! |---|---|---|---|
//! | disable | no | – | – |
//! | allow, prefer | if the server offers it | only if a CA file is given | no |
//! | require | yes | only if a CA file is given (libpq: "behaves like verify-ca") | no |
//! | verify-ca | yes | yes | no |
//! | verify-full | yes | yes | yes |
//!
//! rustls has no "verify the chain but not the name" switch, so the verifier here wraps
//! rustls' WebPKI verifier and forgives only a name mismatch, which WebPKI reports after the
//! chain has passed.

use crate::db::conninfo::{RootCert, SslMode, TlsSettings};
use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::Path;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector every connection of a `Db` uses. With `sslmode=disable` tokio-postgres never
/// calls it, so it is built the same way (without verification) rather than being optional.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let trusted = match &settings.root_cert {
        None => None,
        Some(RootCert::File(path)) => Some(read_certs("sslrootcert", path)?),
        Some(RootCert::System) => Some(system_certs()?),
    };
    let verifier = match trusted {
        None => Verifier {
            chain: None,
            check_name: false,
            provider: provider.clone(),
        },
        Some(certs) => {
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(Error::config("sslrootcert holds no usable CA certificate"));
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| {
                        Error::config("cannot use the sslrootcert certificates").caused_by_error(e)
                    })?;
            Verifier {
                chain: Some(Chain {
                    webpki,
                    pinned: certs,
                }),
                check_name: settings.mode == SslMode::VerifyFull,
                provider: provider.clone(),
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::runtime("cannot set up TLS").caused_by_error(e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match &settings.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = read_certs("sslcert", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::config(format!(
                    "cannot read the private key in sslkey {}",
                    key.display()
                ))
                .caused_by_error(e)
                .with_hint("sslkey must be an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)")
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                Error::config("sslcert and sslkey do not make a usable client certificate")
                    .caused_by_error(e)
            })?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn read_certs(param: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let read_error = |e: rustls::pki_types::pem::Error| {
        Error::config(format!("cannot read {param} file {}", path.display())).caused_by_error(e)
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{param} file {} holds no PEM certificate",
            path.display()
        ))
        .with_hint("expected `-----BEGIN CERTIFICATE-----` blocks"));
    }
    Ok(certs)
}

fn system_certs() -> Result<Vec<CertificateDer<'static>>> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let mut err = Error::config("sslrootcert=system, but no system CA certificates were found");
        for e in found.errors {
            err = err.caused_by(e);
        }
        return Err(err.with_hint(
            "install the CA bundle (ca-certificates), or set SSL_CERT_FILE, or name a CA file in sslrootcert",
        ));
    }
    Ok(found.certs)
}

#[derive(Debug)]
struct Chain {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of the CA file as given. A server certificate found here verbatim is
    /// trusted as OpenSSL trusts it (self-signed server certificates are common with
    /// PostgreSQL), although WebPKI would refuse it as its own issuer.
    pinned: Vec<CertificateDer<'static>>,
}

#[derive(Debug)]
struct Verifier {
    /// None: encrypt without verifying (libpq's require/prefer without a CA file).
    chain: Option<Chain>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        if chain
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            if self.check_name {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&cert, server_name)?;
            }
            return Ok(ServerCertVerified::assertion());
        }
        match chain.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // WebPKI checks the name last, so this error means the chain itself passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    // The handshake signatures are always checked, also without a CA: they prove the server
    // holds the key of the certificate it sent (which channel binding then relies on).
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
