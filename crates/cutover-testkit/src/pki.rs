//! Certificates for TLS tests, made on the spot: a private certificate authority (as RDS, Cloud
//! SQL or Azure use), a server certificate it signs, and client certificates.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{HarnessError, ServerSetup};

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct CertPair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A private CA, and a server certificate it signed for `localhost` and `127.0.0.1`.
#[derive(Debug)]
pub struct Pki {
    /// The CA's certificate: what a client's `sslrootcert` names.
    pub ca_pem: String,
    /// The server's certificate and key.
    pub server: CertPair,
    issuer: Issuer<'static, KeyPair>,
}

fn failed(what: &str, e: rcgen::Error) -> HarnessError {
    HarnessError::InvalidArgument(format!("generating {what}: {e}"))
}

impl Pki {
    /// A new CA (`CN=cutover test CA`) and a server certificate for `names`
    /// (`["localhost", "127.0.0.1"]`: IP addresses become IP SANs).
    pub fn generate(names: &[&str]) -> Result<Pki, HarnessError> {
        let ca_key = KeyPair::generate().map_err(|e| failed("the CA key", e))?;
        let mut ca =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("the CA", e))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "cutover test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(|e| failed("the CA", e))?;
        let issuer = Issuer::new(ca, ca_key);
        let mut pki = Pki {
            ca_pem: ca_cert.pem(),
            server: CertPair {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            issuer,
        };
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        pki.server = pki.sign(names, "localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
        Ok(pki)
    }

    /// A client certificate for the role `user` (its CN, as `cert` authentication wants).
    pub fn client(&self, user: &str) -> Result<CertPair, HarnessError> {
        self.sign(Vec::new(), user, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn sign(
        &self,
        names: Vec<String>,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<CertPair, HarnessError> {
        let key = KeyPair::generate().map_err(|e| failed("a key", e))?;
        let mut params = CertificateParams::new(names).map_err(|e| failed("a certificate", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| failed("a certificate", e))?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server setup with `ssl = on`, this server certificate, and this CA for client
    /// certificates (`ssl_ca_file`).
    pub fn server_setup(&self) -> ServerSetup {
        let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        ServerSetup {
            settings: vec![
                s("ssl", "on"),
                s("ssl_cert_file", "server.crt"),
                s("ssl_key_file", "server.key"),
                s("ssl_ca_file", "ca.crt"),
            ],
            hba: Vec::new(),
            files: vec![
                (
                    "server.crt".to_owned(),
                    self.server.cert_pem.clone().into_bytes(),
                ),
                (
                    "server.key".to_owned(),
                    self.server.key_pem.clone().into_bytes(),
                ),
                ("ca.crt".to_owned(), self.ca_pem.clone().into_bytes()),
            ],
        }
    }
}
