//! Named profiles (`spate profile ...`): where to find a gateway — its address, the CA to
//! trust and the name to check — saved in a config file so commands work from any directory.
//! The file is `$SPATE_CONFIG`, else `$XDG_CONFIG_HOME/spate/config.toml`, else
//! `~/.config/spate/config.toml`. Flags and environment variables win over the profile, the
//! profile over the built-in defaults. `spate up` records itself as the profile `local` (and
//! makes it the current one when none is).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::{Deserialize, Serialize};

/// The profile `spate up` writes.
pub const LOCAL: &str = "local";

/// One profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The client certificate and key presented to a gateway that asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

/// The config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The current profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List the profiles (the current one marked `*`).
    #[command(after_help = "Example:\n  spate profile list")]
    List,
    /// Make NAME the current profile.
    #[command(after_help = "Example:\n  spate profile use prod")]
    Use { name: String },
    /// Create or change NAME with the given --gateway, --ca-cert, --server-name,
    /// --client-cert and --client-key.
    #[command(
        after_help = "Example:\n  spate profile set prod --gateway gw.example.com:7447 --ca-cert /etc/spate/ca.pem\n  spate profile set prod --client-cert /etc/spate/me.pem --client-key /etc/spate/me.key\n  spate profile use prod"
    )]
    Set { name: String },
    /// Delete NAME.
    #[command(after_help = "Example:\n  spate profile delete prod")]
    Delete { name: String },
}

/// Where the config file is, if there is a home to put it in.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SPATE_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("spate").join("config.toml"))
}

/// The config file at `path` (empty when it does not exist).
pub fn load(path: &Path) -> Result<ConfigFile, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|error| format!("cannot read the config file {}: {error}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(error) => Err(format!(
            "cannot read the config file {}: {error}",
            path.display()
        )),
    }
}

/// Writes the config file whole (a temporary file renamed over it).
pub fn save(path: &Path, config: &ConfigFile) -> Result<(), String> {
    let failed = |error: &dyn std::fmt::Display| {
        format!("cannot write the config file {}: {error}", path.display())
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| failed(&error))?;
    }
    let text = toml::to_string(config).map_err(|error| failed(&error))?;
    let temporary = path.with_extension("toml.new");
    std::fs::write(&temporary, text).map_err(|error| failed(&error))?;
    std::fs::rename(&temporary, path).map_err(|error| failed(&error))
}

/// The profile commands read the config file, change it and write it back.
pub fn run(command: &ProfileCommand, given: &Profile) -> Result<(), String> {
    let path = path().ok_or("no config file: set SPATE_CONFIG or HOME")?;
    let mut config = load(&path)?;
    match command {
        ProfileCommand::List => {
            let mut rows = vec![[
                "CURRENT",
                "NAME",
                "GATEWAY",
                "CA_CERT",
                "SERVER_NAME",
                "CLIENT_CERT",
            ]
            .map(str::to_owned)
            .to_vec()];
            for (name, profile) in &config.profiles {
                let current = if config.profile.as_deref() == Some(name) {
                    "*"
                } else {
                    ""
                };
                rows.push(vec![
                    current.to_owned(),
                    name.clone(),
                    profile.gateway.clone().unwrap_or_else(|| "-".to_owned()),
                    profile
                        .ca_cert
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |path| path.display().to_string()),
                    profile
                        .server_name
                        .clone()
                        .unwrap_or_else(|| "-".to_owned()),
                    profile
                        .client_cert
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |path| path.display().to_string()),
                ]);
            }
            return crate::topic::table(&mut std::io::stdout().lock(), &rows)
                .map_err(|error| format!("cannot write to stdout: {error}"));
        }
        ProfileCommand::Use { name } => {
            if !config.profiles.contains_key(name) {
                return Err(format!("no profile {name} in {}", path.display()));
            }
            config.profile = Some(name.clone());
        }
        ProfileCommand::Set { name } => {
            let profile = config.profiles.entry(name.clone()).or_default();
            if given.gateway.is_some() {
                profile.gateway.clone_from(&given.gateway);
            }
            if let Some(ca_cert) = &given.ca_cert {
                // Absolute, so the profile works from any directory (`system` stays a word).
                profile.ca_cert = Some(if ca_cert == Path::new(spate_client::SYSTEM_CA) {
                    ca_cert.clone()
                } else {
                    std::path::absolute(ca_cert).unwrap_or(ca_cert.clone())
                });
            }
            if given.server_name.is_some() {
                profile.server_name.clone_from(&given.server_name);
            }
            // Absolute, so the profile works from any directory.
            let absolute = |path: &PathBuf| std::path::absolute(path).unwrap_or(path.clone());
            if let Some(cert) = &given.client_cert {
                profile.client_cert = Some(absolute(cert));
            }
            if let Some(key) = &given.client_key {
                profile.client_key = Some(absolute(key));
            }
            config.profile.get_or_insert_with(|| name.clone());
        }
        ProfileCommand::Delete { name } => {
            if config.profiles.remove(name).is_none() {
                return Err(format!("no profile {name} in {}", path.display()));
            }
            if config.profile.as_deref() == Some(name) {
                config.profile = None;
            }
        }
    }
    save(&path, &config)
}

/// `spate up` records where it serves and its certificate as the profile `local` and makes
/// it the current one (commands then reach this Spate, as `spate up` says); returns the
/// profile that was current before, if another. Failing to is only worth a warning.
pub fn record_local(
    gateway: std::net::SocketAddr,
    certificate: &Path,
) -> Result<Option<String>, String> {
    let Some(path) = path() else {
        return Ok(None);
    };
    let mut config = load(&path)?;
    // A gateway on every address is reached on loopback from here.
    let mut reach = gateway;
    if reach.ip().is_unspecified() {
        reach.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    config.profiles.insert(
        LOCAL.to_owned(),
        Profile {
            gateway: Some(reach.to_string()),
            ca_cert: Some(std::path::absolute(certificate).unwrap_or(certificate.to_owned())),
            server_name: None,
            client_cert: None,
            client_key: None,
        },
    );
    let previous = config
        .profile
        .replace(LOCAL.to_owned())
        .filter(|previous| previous != LOCAL);
    save(&path, &config)?;
    Ok(previous)
}
