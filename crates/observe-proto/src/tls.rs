//! PEM files for the Hubble API's TLS, checked when they are read: tonic
//! only parses them on the first handshake, so a wrong file would
//! otherwise surface as a failed connection instead of a clear error at
//! start.

use std::path::{Path, PathBuf};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity};

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not PEM certificates", path.display())]
    Certificates {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: not a PEM private key", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read { path: path.into(), source })
}

/// One or more PEM certificates (a chain, or CAs to trust).
pub fn certificates(path: &Path) -> Result<Certificate, PemError> {
    let pem = read(path)?;
    let bad = |source| PemError::Certificates { path: path.into(), source };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(bad)?;
        count += 1;
    }
    if count == 0 {
        return Err(bad(rustls_pki_types::pem::Error::NoItemsFound));
    }
    Ok(Certificate::from_pem(pem))
}

/// A certificate chain and its private key (PKCS#1, PKCS#8 or SEC1).
pub fn identity(cert: &Path, key: &Path) -> Result<Identity, PemError> {
    let chain = certificates(cert)?;
    let pem = read(key)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| PemError::Key { path: key.into(), source })?;
    Ok(Identity::from_pem(chain.into_inner(), pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn bad_files_are_named_with_the_reason() {
        let dir = TempDir(std::env::temp_dir().join(format!("twill-pem-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let junk = dir.0.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = certificates(&junk).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: not PEM certificates", junk.display()));
        let missing = dir.0.join("missing.pem");
        let e = certificates(&missing).unwrap_err();
        assert!(matches!(e, PemError::Read { .. }), "{e}");
        let half = dir.0.join("half.pem");
        std::fs::write(&half, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        assert!(matches!(certificates(&half).unwrap_err(), PemError::Certificates { .. }));
    }
}
