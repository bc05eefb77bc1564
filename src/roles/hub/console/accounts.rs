//! The advisors' accounts for the browser console: a TOML file of names and Argon2id hashes,
//! kept by `kioskd agents add|remove|passwd`, read afresh at every sign-in (a removed account
//! cannot sign in again without restarting the hub).
//!
//! ```toml
//! [agents]
//! alice = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use crate::console::web::{MAX_NAME, MAX_PASSWORD};

/// Shortest password `kioskd agents add` accepts.
pub const MIN_PASSWORD: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("accounts file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("accounts file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("account `{0}`: {1}")]
    Bad(String, String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    agents: BTreeMap<String, String>,
}

/// The accounts file.
#[derive(Debug, Clone)]
pub struct Accounts {
    path: PathBuf,
}

impl Accounts {
    /// Checks the file once (it must exist and parse); it is read again at each sign-in.
    pub fn load(path: &Path) -> Result<Self, AccountsError> {
        let accounts = Self { path: path.to_path_buf() };
        accounts.read()?;
        Ok(accounts)
    }

    fn read(&self) -> Result<File, AccountsError> {
        let text =
            std::fs::read_to_string(&self.path).map_err(|e| AccountsError::Io(self.path.clone(), e))?;
        let file: File =
            toml::from_str(&text).map_err(|e| AccountsError::Parse(self.path.clone(), e.to_string()))?;
        for (name, hash) in &file.agents {
            check_name(name)?;
            PasswordHash::new(hash)
                .map_err(|e| AccountsError::Bad(name.clone(), format!("not an Argon2 hash: {e}")))?;
        }
        Ok(file)
    }

    /// Whether `password` is `name`'s. Slow on purpose (Argon2id): call it off the runtime.
    pub fn verify(&self, name: &str, password: &str) -> Result<bool, AccountsError> {
        let file = self.read()?;
        let Some(hash) = file.agents.get(name) else {
            // Spend the same time as for a real account: no telling which names exist.
            let _ = hash_password(password);
            return Ok(false);
        };
        let hash = PasswordHash::new(hash).map_err(|e| AccountsError::Bad(name.into(), e.to_string()))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
    }

    /// The account names.
    pub fn names(&self) -> Result<Vec<String>, AccountsError> {
        Ok(self.read()?.agents.into_keys().collect())
    }

    /// Adds or replaces (`replace`) an account; the file is created when missing, written
    /// whole to a temporary file and renamed over the old one, readable by its owner only.
    pub fn set(path: &Path, name: &str, password: &str, replace: bool) -> Result<(), AccountsError> {
        check_name(name)?;
        if password.chars().count() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
            return Err(AccountsError::Bad(
                name.into(),
                format!("a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
            ));
        }
        let mut file = read_or_empty(path)?;
        match (file.agents.contains_key(name), replace) {
            (true, false) => return Err(AccountsError::Bad(name.into(), "exists (use passwd)".into())),
            (false, true) => return Err(AccountsError::Bad(name.into(), "no such account (use add)".into())),
            _ => {}
        }
        file.agents.insert(name.to_string(), hash_password(password)?);
        write(path, &file)
    }

    /// Removes an account.
    pub fn remove(path: &Path, name: &str) -> Result<(), AccountsError> {
        let mut file = read_or_empty(path)?;
        if file.agents.remove(name).is_none() {
            return Err(AccountsError::Bad(name.into(), "no such account".into()));
        }
        write(path, &file)
    }
}

fn check_name(name: &str) -> Result<(), AccountsError> {
    if name.len() > MAX_NAME {
        return Err(AccountsError::Bad(name.into(), format!("longer than {MAX_NAME} bytes")));
    }
    crate::edges::net::tls::validate_id(name).map_err(|e| AccountsError::Bad(name.into(), e))
}

fn read_or_empty(path: &Path) -> Result<File, AccountsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| AccountsError::Parse(path.to_path_buf(), e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(AccountsError::Io(path.to_path_buf(), e)),
    }
}

fn write(path: &Path, file: &File) -> Result<(), AccountsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| AccountsError::Io(path.to_path_buf(), e);
    let text = toml::to_string(file).map_err(|e| AccountsError::Parse(path.to_path_buf(), e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(b"# kioskd browser console accounts (kioskd agents add|remove|passwd)\n").map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// An Argon2id hash (PHC string) of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AccountsError> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| AccountsError::Bad(String::new(), "no randomness for a salt".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountsError::Bad(String::new(), e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountsError::Bad(String::new(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_added_checked_changed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.toml");
        Accounts::set(&path, "alice", "correct horse", false).unwrap();
        assert!(Accounts::set(&path, "alice", "another one!", false).is_err(), "add does not replace");
        assert!(Accounts::set(&path, "bob", "short", false).is_err(), "too short");
        assert!(Accounts::set(&path, "bad name", "long enough pw", false).is_err());
        let accounts = Accounts::load(&path).unwrap();
        assert!(accounts.verify("alice", "correct horse").unwrap());
        assert!(!accounts.verify("alice", "wrong horse!").unwrap());
        assert!(!accounts.verify("nobody", "correct horse").unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains("correct horse"), "{text}");
        Accounts::set(&path, "alice", "battery staple", true).unwrap();
        assert!(!accounts.verify("alice", "correct horse").unwrap(), "the old password is gone");
        assert!(accounts.verify("alice", "battery staple").unwrap());
        Accounts::remove(&path, "alice").unwrap();
        assert!(!accounts.verify("alice", "battery staple").unwrap(), "read afresh: removed at once");
        assert!(Accounts::remove(&path, "alice").is_err());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_broken_accounts_file_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.toml");
        std::fs::write(&path, "[agents]\nalice = \"plaintext\"\n").unwrap();
        let e = Accounts::load(&path).unwrap_err().to_string();
        assert!(e.contains("alice") && e.contains("Argon2"), "{e}");
        std::fs::write(&path, "[agents\n").unwrap();
        assert!(Accounts::load(&path).unwrap_err().to_string().contains("accounts.toml"));
        assert!(Accounts::load(&dir.path().join("missing.toml")).is_err());
    }
}
