//! Sealing the App's secrets at rest: ChaCha20-Poly1305 with a key from
//! `CONVEYOR_SECRET_KEY`, or from a key file made once under `CONVEYOR_DATA_DIR`.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use secrecy::{ExposeSecret, SecretString};

/// Under `CONVEYOR_DATA_DIR`.
pub const KEY_FILE: &str = "secret.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
#[error(
    "a sealed {field} does not open with this key (CONVEYOR_SECRET_KEY or the key file changed?)"
)]
pub struct Unsealable {
    pub field: &'static str,
}

pub struct SealingKey(ChaCha20Poly1305);

impl SealingKey {
    /// `configured` (`CONVEYOR_SECRET_KEY`, 64 hex digits, unless empty) when set; otherwise the key file
    /// under `data_dir`, made with mode 0600 the first time.
    pub fn load(configured: Option<&SecretString>, data_dir: &Path) -> anyhow::Result<Self> {
        let key = match configured {
            Some(key) => Self::from_hex(key.expose_secret())
                .context("CONVEYOR_SECRET_KEY: expected 64 hex digits (`openssl rand -hex 32`)")?,
            None => Self::from_file(&data_dir.join(KEY_FILE))?,
        };
        Ok(key)
    }

    fn from_hex(text: &str) -> anyhow::Result<Self> {
        let mut key = [0; KEY_LEN];
        hex::decode_to_slice(text.trim(), &mut key)?;
        Ok(Self(ChaCha20Poly1305::new(&Key::from(key))))
    }

    /// Reads the key file, or makes it. `create_new` settles a race between two processes
    /// starting on one data directory: the loser reads the winner's key.
    fn from_file(path: &PathBuf) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("CONVEYOR_DATA_DIR: cannot create {}", dir.display()))?;
        }
        let fresh = hex::encode(ChaCha20Poly1305::generate_key(&mut OsRng));
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut file) => {
                file.write_all(fresh.as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing the key file {}", path.display()))?;
                tracing::info!(path = %path.display(), "created the key that seals the App's secrets; keep it with the database");
                Self::from_hex(&fresh)
            }
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the key file {}", path.display()))?;
                Self::from_hex(&text).with_context(|| {
                    format!(
                        "the key file {} does not hold 64 hex digits",
                        path.display()
                    )
                })
            }
            Err(err) => bail!("cannot create the key file {}: {err}", path.display()),
        }
    }

    /// `nonce ‖ ciphertext`, bound to `field` so one sealed value cannot stand in for another.
    pub fn seal(&self, field: &'static str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext,
            aad: field.as_bytes(),
        };
        let ciphertext = self
            .0
            .encrypt(&nonce, payload)
            .expect("ChaCha20-Poly1305 seals any message that fits in memory");
        [&nonce[..], &ciphertext].concat()
    }

    pub fn open(&self, field: &'static str, sealed: &[u8]) -> Result<SecretString, Unsealable> {
        let unsealable = || Unsealable { field };
        let nonce: [u8; NONCE_LEN] = sealed
            .get(..NONCE_LEN)
            .and_then(|nonce| nonce.try_into().ok())
            .ok_or_else(unsealable)?;
        let payload = Payload {
            msg: &sealed[NONCE_LEN..],
            aad: field.as_bytes(),
        };
        let plaintext = self
            .0
            .decrypt(&Nonce::from(nonce), payload)
            .map_err(|_| unsealable())?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| unsealable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hex_digit: char) -> SealingKey {
        SealingKey::from_hex(&hex_digit.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn opens_what_it_sealed_for_the_same_field_only() {
        let key = key('a');
        let sealed = key.seal("webhook_secret", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key.open("webhook_secret", &sealed).unwrap().expose_secret(),
            "hunter2"
        );
        assert!(key.open("client_secret", &sealed).is_err());
        assert!(self::key('b').open("webhook_secret", &sealed).is_err());
        assert!(key.open("webhook_secret", &sealed[..5]).is_err());
    }

    #[test]
    fn a_configured_key_must_be_64_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let short: SecretString = "abcd".to_owned().into();
        assert!(SealingKey::load(Some(&short), dir.path()).is_err());
        assert!(!dir.path().join(KEY_FILE).exists());
    }
}
