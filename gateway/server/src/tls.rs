//! TLS for the QUIC endpoint and the Kafka listener: the operator's certificate and key from
//! PEM files, or a development certificate for `localhost`/`127.0.0.1` created on first start;
//! client certificates checked against the operator's CAs (mutual TLS), and the principal a
//! client certificate names.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

pub use spate_proto::ALPN;

/// File names of the development certificate in its directory.
pub const DEV_CERT_FILE: &str = "cert.pem";
pub const DEV_KEY_FILE: &str = "key.pem";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no {what}")]
    Missing { path: PathBuf, what: &'static str },
    #[error(
        "{} holds an encrypted private key, which the gateway cannot use: give it the key \
         unencrypted (`openssl pkey -in {} -out key.pem` asks for the passphrase once) and \
         protect that file with its permissions (chmod 600)",
        path.display(),
        path.display()
    )]
    EncryptedKey { path: PathBuf },
    #[error("cannot create the development certificate: {0}")]
    Generate(String),
    #[error("invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot use the client CA certificates of {}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
}

/// Whether clients must present a certificate (`--client-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A client may present a certificate, which must then be valid; one without connects
    /// anonymously.
    Optional,
    /// Every client presents a valid certificate, or the handshake fails.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(ClientAuth::None),
            "optional" => Ok(ClientAuth::Optional),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!("{other} (valid: none, optional, required)")),
        }
    }
}

/// How a listener checks client certificates: the CAs that issue them, the revocation lists
/// of those CAs, and whether one is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTrust {
    /// PEM file of the CA certificates that issue client certificates.
    pub ca: PathBuf,
    /// PEM file of certificate revocation lists (`X509 CRL`), if any.
    pub crl: Option<PathBuf>,
    /// `Optional` or `Required` (with `None` there is no `ClientTrust`).
    pub auth: ClientAuth,
}

/// Reads the CRLs in `path` (PEM).
fn read_crls(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    read_pem(
        path,
        "certificate revocation list (PEM `X509 CRL`)",
        |bytes| rustls_pemfile::crls(bytes).collect(),
    )
}

/// The verifier of client certificates `trust` describes (webpki: chain to one of the CAs,
/// valid now, for client authentication, not revoked by the CRLs given).
fn client_verifier(
    trust: &ClientTrust,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&trust.ca)? {
        roots.add(cert)?;
    }
    let mut builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if let Some(crl) = &trust.crl {
        // A CRL revokes what its CA issued: the client's own certificate is checked against
        // the CRL of its issuer; clients of a CA whose CRL is not in the file are not
        // checked (operators may list CRLs for some CAs of the bundle only).
        builder = builder
            .with_crls(read_crls(crl)?)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    if trust.auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|source| TlsError::ClientCa {
        path: trust.ca.clone(),
        source,
    })
}

/// The principal a client certificate names: its subject's common name (CN), or, without
/// one, its first subject alternative name (a DNS name, then an e-mail address, then a URI).
/// `None` for a certificate that names none of them (or cannot be parsed; webpki accepted
/// it, so this does not happen with a certificate the handshake let through).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .find_map(|name| name.as_str().ok().map(str::to_owned))
        .filter(|name| !name.is_empty());
    if common_name.is_some() {
        return common_name;
    }
    let names = parsed.subject_alternative_name().ok().flatten()?;
    let pick = |wanted: fn(&GeneralName<'_>) -> Option<String>| {
        names.value.general_names.iter().find_map(wanted)
    };
    pick(|name| match name {
        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
        _ => None,
    })
    .or_else(|| {
        pick(|name| match name {
            GeneralName::RFC822Name(mail) => Some((*mail).to_owned()),
            _ => None,
        })
    })
    .or_else(|| {
        pick(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_pem(path, "certificate", |bytes| {
        rustls_pemfile::certs(bytes).collect()
    })
}

/// The items `parse` finds in the PEM file at `path`; `Missing` (naming `what`) when there
/// are none.
fn read_pem<T>(
    path: &Path,
    what: &'static str,
    parse: impl FnOnce(&mut &[u8]) -> Result<Vec<T>, std::io::Error>,
) -> Result<Vec<T>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let items = parse(&mut bytes.as_slice()).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    if items.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_owned(),
            what,
        });
    }
    Ok(items)
}

/// Markers of an encrypted private key in PEM: PKCS#8 (`openssl genpkey -aes256`) and the
/// legacy OpenSSL form (`Proc-Type: 4,ENCRYPTED` in an RSA or EC key's headers).
const ENCRYPTED_KEY_MARKERS: [&[u8]; 2] = [
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
    b"Proc-Type: 4,ENCRYPTED",
];

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let encrypted = ENCRYPTED_KEY_MARKERS
        .iter()
        .any(|marker| bytes.windows(marker.len()).any(|window| window == *marker));
    if encrypted {
        return Err(TlsError::EncryptedKey {
            path: path.to_owned(),
        });
    }
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Missing {
            path: path.to_owned(),
            what: "private key",
        })
}

/// The file next to the development certificate that lists the names it was issued for.
pub const DEV_NAMES_FILE: &str = "names";

/// The names a development certificate always carries.
const DEV_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Creates the development certificate in `dir` unless a usable one is there; returns the
/// paths of the certificate and its key. It names `localhost` and `127.0.0.1`.
pub fn ensure_dev_cert(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    ensure_dev_cert_for(dir, &[])
}

/// The extra names of the development certificate of a gateway listening on `listen`: on
/// every address (`0.0.0.0`, `::`), the machine's host name and addresses (loopback and
/// link-local left out); on one address other than loopback, that address.
pub fn dev_names_for(listen: std::net::SocketAddr) -> Vec<String> {
    let ip = listen.ip();
    if ip.is_loopback() {
        return Vec::new();
    }
    if !ip.is_unspecified() {
        return vec![ip.to_string()];
    }
    let mut names = Vec::new();
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_owned());
        }
    }
    // Every address of the machine (Linux's tables; loopback and link-local left out), then
    // the source address of a route to a documentation address (RFC 5737: connecting a UDP
    // socket sends nothing), in case the tables are not readable.
    let mut addresses = local_addresses();
    let outbound = std::net::UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|socket| {
            socket.connect(("192.0.2.1", 9))?;
            socket.local_addr()
        })
        .map(|address| address.ip());
    if let Ok(outbound) = outbound {
        addresses.push(outbound);
    }
    for address in addresses {
        let name = address.to_string();
        if !address.is_unspecified() && !address.is_loopback() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The machine's IPv4 addresses (`/proc/net/fib_trie`'s local host routes) and global IPv6
/// addresses (`/proc/net/if_inet6`, scope 0), in the order listed, each once.
fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut found: Vec<std::net::IpAddr> = Vec::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut previous = "";
        for line in trie.lines() {
            if line.trim() == "/32 host LOCAL" {
                let address = previous.trim().trim_start_matches("|-- ");
                if let Ok(address) = address.parse::<std::net::Ipv4Addr>() {
                    if !found.contains(&address.into()) {
                        found.push(address.into());
                    }
                }
            }
            previous = line;
        }
    }
    if let Ok(table) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // address, interface index, prefix length, scope (0: global), flags, name
            if fields.len() == 6 && fields[3] == "00" {
                if let Ok(bits) = u128::from_str_radix(fields[0], 16) {
                    let address = std::net::IpAddr::from(std::net::Ipv6Addr::from(bits));
                    if !found.contains(&address) {
                        found.push(address);
                    }
                }
            }
        }
    }
    found
}

/// Like [`ensure_dev_cert`], for a certificate that also names `extra` (host names or IP
/// addresses). A certificate issued for other names (the `names` file next to it says which)
/// is replaced; one that does not load (empty or torn files after a crash, a key that does not
/// match) too, with a warning.
pub fn ensure_dev_cert_for(dir: &Path, extra: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join(DEV_CERT_FILE);
    let key = dir.join(DEV_KEY_FILE);
    let names_file = dir.join(DEV_NAMES_FILE);
    let mut names: Vec<String> = DEV_NAMES.iter().map(|name| (*name).to_owned()).collect();
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let listed = names.join("\n") + "\n";
    if cert.exists() || key.exists() {
        // A certificate from before the names file names the defaults.
        let issued_for =
            std::fs::read_to_string(&names_file).unwrap_or_else(|_| DEV_NAMES.join("\n") + "\n");
        match server_config(&cert, &key, None) {
            Ok(_) if issued_for == listed => return Ok((cert, key)),
            Ok(_) => tracing::info!(
                dir = %dir.display(),
                names = %names.join(", "),
                "issuing a new development certificate for these names"
            ),
            Err(error) => tracing::warn!(
                dir = %dir.display(),
                "the development certificate does not load ({error}); creating a new one"
            ),
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|error| TlsError::Generate(error.to_string()))?;
    // Each file is written whole or not at all: a temporary file, fsync, rename, then an
    // fsync of the directory. A crash leaves the old file, the new one, or (between the
    // renames) a pair that does not match or names that differ, which the checks above
    // replace.
    write_atomically(&key, generated.key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(&cert, generated.cert.pem().as_bytes(), 0o644)?;
    write_atomically(&names_file, listed.as_bytes(), 0o644)?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
    Ok((cert, key))
}

/// Replaces `path` with `bytes` (file mode `mode`) through a temporary file that is synced
/// before the rename.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    written.map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The TLS 1.3 server configuration for the QUIC endpoint: ALPN `spate/1`, no 0-RTT, client
/// certificates checked as `client` says (none asked for without it).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client: Option<&ClientTrust>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = tls_server_config(cert, key, client, &[&rustls::version::TLS13])?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // No request is ever accepted as 0-RTT data: it could be replayed.
    config.max_early_data_size = 0;
    Ok(config)
}

/// The TLS server configuration of the Kafka listener: TLS 1.2 and 1.3 (Kafka clients speak
/// either), no ALPN, client certificates checked as `client` says.
pub fn kafka_server_config(
    cert: &Path,
    key: &Path,
    client: Option<&ClientTrust>,
) -> Result<rustls::ServerConfig, TlsError> {
    tls_server_config(
        cert,
        key,
        client,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

fn tls_server_config(
    cert: &Path,
    key: &Path,
    client: Option<&ClientTrust>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?;
    let builder = match client {
        Some(trust) => builder.with_client_cert_verifier(client_verifier(trust, provider)?),
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_single_cert(read_certs(cert)?, read_key(key)?)?)
}

/// A TLS 1.3 client configuration trusting the certificate(s) in `ca` (for tests and tools).
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: Option<&str>, alternative: &[&str]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(
            alternative
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_principal_is_the_common_name_else_the_first_alternative_name() {
        assert_eq!(
            principal_of(&certificate(Some("writer"), &["writer.example.com"])).as_deref(),
            Some("writer")
        );
        assert_eq!(
            principal_of(&certificate(
                None,
                &["ingest.example.com", "other.example.com"]
            ))
            .as_deref(),
            Some("ingest.example.com")
        );
        assert_eq!(principal_of(&certificate(None, &[])), None);
        assert_eq!(
            principal_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            None
        );
    }

    #[test]
    fn client_auth_modes_parse() {
        assert_eq!("required".parse(), Ok(ClientAuth::Required));
        assert_eq!("optional".parse(), Ok(ClientAuth::Optional));
        assert_eq!("none".parse(), Ok(ClientAuth::None));
        assert!("always"
            .parse::<ClientAuth>()
            .unwrap_err()
            .contains("valid: none"));
    }

    #[test]
    fn an_encrypted_key_is_reported_as_such() {
        let dir = std::env::temp_dir().join(format!("spate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pkcs8 = dir.join("pkcs8.pem");
        std::fs::write(
            &pkcs8,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAc\n\
             -----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let legacy = dir.join("legacy.pem");
        std::fs::write(
            &legacy,
            "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
             DEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n\
             -----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        for path in [&pkcs8, &legacy] {
            let error = read_key(path).unwrap_err();
            assert!(matches!(error, TlsError::EncryptedKey { .. }), "{error}");
            assert!(
                error.to_string().contains("encrypted private key"),
                "{error}"
            );
        }
        // A file with no key at all is still "holds no private key".
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(read_key(&empty), Err(TlsError::Missing { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
