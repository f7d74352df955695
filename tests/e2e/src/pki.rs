//! A throwaway PKI for TLS tests: a CA and certificates made by openssl.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::run_ok;

/// A test CA and certificates made by openssl, removed on drop.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for `server_name` (subject alternative
    /// name `san`, e.g. `DNS:name` or `IP:192.168.1.2`) and a client
    /// certificate, all signed by the CA.
    pub fn new(dir: &Path, server_name: &str, san: &str) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        pki.openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=twill test CA"],
            ]
            .concat(),
        );
        for (name, cn, ext) in [
            ("server", server_name, format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n")),
            ("client", "hubble-client", "extendedKeyUsage=clientAuth\n".to_string()),
        ] {
            std::fs::write(pki.path(&format!("{name}.ext")), ext).unwrap();
            let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
            pki.openssl(
                &[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]]
                    .concat(),
            );
            pki.openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &pem,
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        pki
    }

    fn openssl(&self, args: &[&str]) {
        run_ok(Command::new("openssl").args(args).current_dir(&self.dir).stdin(Stdio::null()));
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
