//! A node's long-term identity: the X25519 static key its Noise handshakes
//! prove, kept in `<data dir>/identity.key`.
//!
//! The file is made on first start, owner-only from the moment it exists
//! (created with mode 0600, written, synced, then linked into place so a
//! crash never leaves a half-written key under the real name), and refused
//! on load if its mode lets group or others in: a key others could read is
//! no longer an identity. The private key is wiped from memory on drop and
//! never printed ([`Identity`]'s `Debug` shows only the public fingerprint).
//!
//! File format (text, so an operator can tell what it is):
//!
//! ```text
//! roundtable-identity v1
//! private <64 lowercase hex digits>
//! public <64 lowercase hex digits, as the directory publishes it>
//! ```
//!
//! The public line is redundant on purpose: on load it must equal the key
//! derived from the private line, which catches a corrupted file.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use roundtable_shared::secure::{
    hex_decode_into, hex_encode_into, Fingerprint, PublicKey, KEY_LEN, NOISE_PARAMS,
};
use snow::params::{DHChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use zeroize::Zeroizing;

/// Name of the key file inside the node's data directory.
pub const KEY_FILE: &str = "identity.key";

/// First line of the key file.
const MAGIC: &str = "roundtable-identity v1";

/// Largest key file read: the format is about 120 bytes.
const MAX_FILE: u64 = 512;

/// Why the identity cannot be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} has mode {mode:04o}: an identity key must be readable by its owner only \
         (run `chmod 600 {}` if you trust its contents)",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is not a Roundtable identity key file: {reason}", path.display())]
    Format { path: PathBuf, reason: &'static str },
    #[error("cannot make a key: {0}")]
    Noise(snow::Error),
}

/// A node's long-term Noise static key pair.
pub struct Identity {
    private: Zeroizing<[u8; KEY_LEN]>,
    public: PublicKey,
}

impl fmt::Debug for Identity {
    /// Public half only: an identity may be logged, its private key never.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.public.fingerprint().to_string())
            .field("private", &"<redacted>")
            .finish()
    }
}

fn params() -> NoiseParams {
    NOISE_PARAMS
        .parse()
        .expect("NOISE_PARAMS is a valid Noise name")
}

impl Identity {
    /// A fresh key pair from snow's generator (the OS random source).
    pub fn generate() -> Result<Identity, IdentityError> {
        let pair = snow::Builder::new(params())
            .generate_keypair()
            .map_err(IdentityError::Noise)?;
        let private = Zeroizing::new(pair.private);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&private);
        let public = PublicKey::from_bytes(&pair.public)
            .map_err(|_| IdentityError::Noise(snow::Error::Input))?;
        Ok(Identity {
            private: key,
            public,
        })
    }

    /// The identity in `dir/identity.key`, made there first if there is
    /// none (the directory too). Refuses a file others can access, or one
    /// that is not exactly a key in the format above.
    pub fn load_or_create(dir: &Path) -> Result<Identity, IdentityError> {
        let path = dir.join(KEY_FILE);
        match fs::symlink_metadata(&path) {
            Ok(_) => Identity::load(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
                let id = Identity::generate()?;
                match id.create_file(dir, &path) {
                    Ok(()) => {
                        tracing::info!(
                            path = %path.display(),
                            fingerprint = %id.fingerprint(),
                            "made a new identity key"
                        );
                        Ok(id)
                    }
                    // Another process made one first: use that one.
                    Err(IdentityError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Identity::load(&path)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// Reads and checks an existing key file.
    fn load(path: &Path) -> Result<Identity, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let format = |reason| IdentityError::Format {
            path: path.to_owned(),
            reason,
        };
        // Refuse a symlink: its target's permissions are not ours to judge.
        if !fs::symlink_metadata(path).map_err(io)?.is_file() {
            return Err(IdentityError::NotAFile {
                path: path.to_owned(),
            });
        }
        let file = File::open(path).map_err(io)?;
        // Judge the file actually opened, not the name (no swap in between).
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(IdentityError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        if meta.len() > MAX_FILE {
            return Err(format("too large"));
        }
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => format("not text"),
                _ => io(e),
            })?;
        let mut lines = text.split('\n');
        if lines.next() != Some(MAGIC) {
            return Err(format("missing the roundtable-identity v1 header"));
        }
        let field = |line: Option<&str>, label: &str| -> Option<Zeroizing<Vec<u8>>> {
            let value = line?.strip_prefix(label)?.strip_prefix(' ')?;
            // The same strict text as a public key's, decoded straight
            // into a buffer that is wiped.
            let mut bytes = Zeroizing::new(vec![0u8; KEY_LEN]);
            hex_decode_into(value, &mut bytes).then_some(bytes)
        };
        let private = field(lines.next(), "private").ok_or_else(|| format("bad private line"))?;
        let public = field(lines.next(), "public").ok_or_else(|| format("bad public line"))?;
        if lines.next() != Some("") || lines.next().is_some() {
            return Err(format("unexpected data after the public line"));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&private);
        let derived = derive_public(&key).ok_or_else(|| format("cannot derive a public key"))?;
        if derived.as_bytes()[..] != public[..] {
            return Err(format("the public key does not match the private key"));
        }
        Ok(Identity {
            private: key,
            public: derived,
        })
    }

    /// Writes the key to `path` without ever exposing it: a temporary file
    /// made 0600, synced, then hard-linked to the final name (which fails
    /// rather than replace a key another process just made), then the
    /// temporary name removed and the directory synced.
    fn create_file(&self, dir: &Path, path: &Path) -> Result<(), IdentityError> {
        let tmp = dir.join(format!(
            ".{KEY_FILE}.{}.{:016x}.tmp",
            std::process::id(),
            u64::from_le_bytes(self.public.as_bytes()[..8].try_into().unwrap_or([0; 8]))
        ));
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| IdentityError::Io { path: p, source }
        };
        // Built in one wiped buffer so no copy of the private key lingers.
        let mut contents = Zeroizing::new(String::with_capacity(MAX_FILE as usize));
        contents.push_str(MAGIC);
        contents.push_str("\nprivate ");
        hex_encode_into(&mut contents, &self.private[..]);
        contents.push_str("\npublic ");
        contents.push_str(&self.public.to_text());
        contents.push('\n');
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(contents.as_bytes())?;
            f.sync_all()
        })();
        let linked = written.and_then(|()| fs::hard_link(&tmp, path));
        let _ = fs::remove_file(&tmp);
        linked.map_err(io(path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(())
    }

    /// The public key, as peers and the directory see it.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The fingerprint people compare.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint()
    }

    /// The private key, for the Noise handshake only.
    pub(crate) fn private_key(&self) -> &[u8; KEY_LEN] {
        &self.private
    }
}

/// The X25519 public key of `private`, through snow's own resolver (no
/// curve code of ours).
fn derive_public(private: &[u8; KEY_LEN]) -> Option<PublicKey> {
    let mut dh = DefaultResolver.resolve_dh(&DHChoice::Curve25519)?;
    dh.set(private);
    PublicKey::from_bytes(dh.pubkey()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn made_once_then_reloaded_identically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node-data");
        let first = Identity::load_or_create(&data).unwrap();
        let path = data.join(KEY_FILE);
        assert_eq!(mode(&path), 0o600);
        let again = Identity::load_or_create(&data).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        assert_eq!(first.private_key(), again.private_key());
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE]);
        // The stored public key is the one the private key gives.
        assert_eq!(
            derive_public(first.private_key()).as_ref(),
            Some(first.public_key())
        );
    }

    #[test]
    fn two_fresh_identities_differ() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.public_key(), b.public_key());
    }

    #[test]
    fn group_or_other_access_is_refused_naming_file_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        for bad in [0o640, 0o604, 0o644, 0o660, 0o610] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            let err = Identity::load_or_create(dir.path()).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, IdentityError::Permissions { mode, .. } if mode == bad),
                "{text}"
            );
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(&format!("{bad:04o}")), "{text}");
        }
        // Owner-only read is fine.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        Identity::load_or_create(dir.path()).unwrap();
    }

    #[test]
    fn corrupted_truncated_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = Identity::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let original = fs::read_to_string(&path).unwrap();
        let private_line = original.lines().nth(1).unwrap();
        // One character of the private key changed: no longer matches `public`.
        let mut flipped = private_line.to_owned().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        let flipped = original.replace(private_line, std::str::from_utf8(&flipped).unwrap());
        let cases: Vec<Vec<u8>> = vec![
            flipped.into_bytes(),
            original.as_bytes()[..original.len() / 2].to_vec(),
            Vec::new(),
            vec![0u8; KEY_LEN],
            good.private_key().to_vec(),
            format!("{original}extra\n").into_bytes(),
            vec![b'x'; 4096],
            vec![0xff; 100],
        ];
        for bytes in cases {
            fs::write(&path, &bytes).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = Identity::load_or_create(dir.path()).unwrap_err();
            assert!(
                matches!(err, IdentityError::Format { .. }),
                "{bytes:?} gave {err}"
            );
            assert!(err.to_string().contains(KEY_FILE));
        }
        // The original still loads.
        fs::write(&path, &original).unwrap();
        assert_eq!(
            Identity::load_or_create(dir.path()).unwrap().public_key(),
            good.public_key()
        );
    }

    #[test]
    fn a_symlinked_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        Identity::load_or_create(elsewhere.path()).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join(KEY_FILE), dir.path().join(KEY_FILE))
            .unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::NotAFile { .. })
        ));
    }

    #[test]
    fn debug_output_never_shows_the_private_key() {
        let id = Identity::generate().unwrap();
        let shown = format!("{id:?} {id:#?}");
        for window in id.private_key().windows(4) {
            let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!shown.contains(&hex));
        }
        assert!(shown.contains(&id.fingerprint().to_string()));
    }
}
