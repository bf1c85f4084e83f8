//! Who may log in: Argon2id password hashes in the store, optional open
//! registration, and throttling of failed logins per name and per source.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::OsRng;
use tokio::sync::Semaphore;

use crate::store::directory::DirectoryStore;
use crate::store::StoreError;

/// Argon2id cost of new hashes. Existing hashes carry their own parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    /// OWASP's recommended Argon2id setting (19 MiB, 2 iterations, 1 lane).
    fn default() -> Self {
        HashCost {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Account errors.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid user name {0:?}: use 1 to 64 of A-Z a-z 0-9 _ . -")]
    BadName(String),
    #[error("invalid password: it must be 1 to 256 bytes without spaces or control characters")]
    BadPassword,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `name` is acceptable as a user name (it appears unescaped in
/// QUERY results, so no commas, spaces or control characters).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `password` can be sent as a PASS argument.
pub fn valid_password(password: &str) -> bool {
    (1..=256).contains(&password.len()) && password.bytes().all(|b| b > 0x20 && b != 0x7f)
}

fn argon2(cost: HashCost) -> Result<Argon2<'static>, AccountError> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|e| AccountError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with Argon2id and a fresh random salt (PHC string).
pub fn hash_password(password: &str, cost: HashCost) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(cost)?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Checks `password` against a PHC hash; a malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Creates or updates an account (the `add-user` command).
pub fn provision(
    store: &DirectoryStore,
    name: &str,
    password: &str,
    cost: HashCost,
) -> Result<bool, AccountError> {
    if !valid_name(name) {
        return Err(AccountError::BadName(name.to_owned()));
    }
    if !valid_password(password) {
        return Err(AccountError::BadPassword);
    }
    let hash = hash_password(password, cost)?;
    Ok(store.put_account(name, &hash)?)
}

/// The result of a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// The password matched an existing account.
    Accepted,
    /// Open registration created the account with this password.
    Registered,
    /// Unknown name or wrong password.
    Refused,
    /// Too many recent failures for this name or source: retry after the delay.
    Throttled(Duration),
}

/// Throttling policy for failed logins.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures per name allowed before lockouts begin.
    pub free_per_name: u32,
    /// Failures per source address allowed before lockouts begin.
    pub free_per_source: u32,
    /// First lockout; each further failure doubles it, up to `max_lockout`.
    pub base_lockout: Duration,
    pub max_lockout: Duration,
    /// A key with no failure for this long is forgotten.
    pub forget_after: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            free_per_name: 5,
            free_per_source: 20,
            base_lockout: Duration::from_secs(1),
            max_lockout: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failed-login bookkeeping keyed by `name:<n>` and `ip:<a>`; bounded in size.
#[derive(Debug)]
struct Throttle {
    policy: ThrottlePolicy,
    strikes: Mutex<HashMap<String, Strikes>>,
}

const MAX_THROTTLE_KEYS: usize = 100_000;

impl Throttle {
    fn keys(name: &str, source: IpAddr) -> [(String, u32); 2] {
        [(format!("name:{name}"), 0), (format!("ip:{source}"), 1)]
    }

    fn free(&self, which: u32) -> u32 {
        if which == 0 {
            self.policy.free_per_name
        } else {
            self.policy.free_per_source
        }
    }

    /// How long the caller must wait, if locked out.
    fn check(&self, name: &str, source: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(name, source)
            .iter()
            .filter_map(|(k, _)| map.get(k)?.locked_until)
            .filter(|&until| until > now)
            .map(|until| until - now)
            .max()
    }

    fn fail(&self, name: &str, source: IpAddr, now: Instant) {
        let mut map = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_THROTTLE_KEYS {
            let forget = self.policy.forget_after;
            map.retain(|_, s| {
                now.duration_since(s.last) < forget || s.locked_until.is_some_and(|u| u > now)
            });
        }
        for (key, which) in Self::keys(name, source) {
            let free = self.free(which);
            let s = map.entry(key).or_insert(Strikes {
                failures: 0,
                last: now,
                locked_until: None,
            });
            if now.duration_since(s.last) >= self.policy.forget_after {
                s.failures = 0;
            }
            s.failures += 1;
            s.last = now;
            if s.failures > free {
                let doublings = (s.failures - free - 1).min(16);
                let lock =
                    (self.policy.base_lockout * 2u32.pow(doublings)).min(self.policy.max_lockout);
                s.locked_until = Some(now + lock);
            }
        }
    }

    fn succeed(&self, name: &str) {
        let mut map = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("name:{name}"));
    }
}

/// Login checks for the directory server.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: DirectoryStore,
    open_registration: bool,
    cost: HashCost,
    /// Argon2 is memory-hard: bound how many run at once.
    hashing: Arc<Semaphore>,
    throttle: Arc<Throttle>,
    /// Verified against when the name is unknown, so that unknown names
    /// take as long to refuse as wrong passwords.
    decoy: Arc<str>,
}

impl Accounts {
    pub fn new(
        store: DirectoryStore,
        open_registration: bool,
        cost: HashCost,
        policy: ThrottlePolicy,
    ) -> Result<Self, AccountError> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Accounts {
            store,
            open_registration,
            cost,
            hashing: Arc::new(Semaphore::new(workers)),
            throttle: Arc::new(Throttle {
                policy,
                strikes: Mutex::new(HashMap::new()),
            }),
            decoy: hash_password("decoy-password-never-matches", cost)?.into(),
        })
    }

    /// Checks a USER/PASS pair coming from `source`.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        source: IpAddr,
    ) -> Result<Login, AccountError> {
        if let Some(wait) = self.throttle.check(name, source, Instant::now()) {
            return Ok(Login::Throttled(wait));
        }
        let _slot = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))?;
        let (name_o, password_o) = (name.to_owned(), password.to_owned());
        let (store, cost, open, decoy) = (
            self.store.clone(),
            self.cost,
            self.open_registration,
            self.decoy.clone(),
        );
        let outcome = tokio::task::spawn_blocking(move || -> Result<Login, AccountError> {
            match store.account_hash(&name_o)? {
                Some(phc) => Ok(if verify_password(&password_o, &phc) {
                    Login::Accepted
                } else {
                    Login::Refused
                }),
                None if open && valid_name(&name_o) && valid_password(&password_o) => {
                    let hash = hash_password(&password_o, cost)?;
                    // Two first logins racing for one name: only one creates it,
                    // the other must match the winner's password.
                    if store.create_account(&name_o, &hash)? {
                        Ok(Login::Registered)
                    } else {
                        let phc = store.account_hash(&name_o)?.unwrap_or_default();
                        Ok(if verify_password(&password_o, &phc) {
                            Login::Accepted
                        } else {
                            Login::Refused
                        })
                    }
                }
                None => {
                    let _ = verify_password(&password_o, &decoy);
                    Ok(Login::Refused)
                }
            }
        })
        .await
        .map_err(|e| AccountError::Hash(e.to_string()))??;
        match outcome {
            Login::Refused => self.throttle.fail(name, source, Instant::now()),
            Login::Accepted | Login::Registered => self.throttle.succeed(name),
            Login::Throttled(_) => {}
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const CHEAP: HashCost = HashCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn store() -> (tempfile::TempDir, DirectoryStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = DirectoryStore::open(&dir.path().join("d.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("s3cret", CHEAP).unwrap();
        let b = hash_password("s3cret", CHEAP).unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salts differ");
        assert!(verify_password("s3cret", &a));
        assert!(!verify_password("s3cre", &a));
        assert!(!verify_password("s3cret", "not a hash"));
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(valid_name("corrado"));
        assert!(valid_name("lab-2.node_1"));
        assert!(!valid_name("a,b"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(65)));
        assert!(!valid_password("has space"));
        assert!(!valid_password(""));
    }

    #[tokio::test]
    async fn login_accepts_right_password_refuses_wrong_and_unknown() {
        let (_d, s) = store();
        provision(&s, "alice", "pw", CHEAP).unwrap();
        let acc = Accounts::new(s, false, CHEAP, ThrottlePolicy::default()).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(acc.login("alice", "pw", ip).await.unwrap(), Login::Accepted);
        assert_eq!(
            acc.login("alice", "nope", ip).await.unwrap(),
            Login::Refused
        );
        assert_eq!(
            acc.login("mallory", "pw", ip).await.unwrap(),
            Login::Refused
        );
    }

    #[tokio::test]
    async fn open_registration_creates_once_then_checks() {
        let (_d, s) = store();
        let acc = Accounts::new(s.clone(), true, CHEAP, ThrottlePolicy::default()).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            acc.login("newbie", "pw1", ip).await.unwrap(),
            Login::Registered
        );
        assert_eq!(
            acc.login("newbie", "pw1", ip).await.unwrap(),
            Login::Accepted
        );
        assert_eq!(
            acc.login("newbie", "pw2", ip).await.unwrap(),
            Login::Refused
        );
        assert!(s.account_hash("newbie").unwrap().is_some());
    }

    #[tokio::test]
    async fn repeated_failures_lock_the_name_and_the_source() {
        let (_d, s) = store();
        provision(&s, "alice", "pw", CHEAP).unwrap();
        let policy = ThrottlePolicy {
            free_per_name: 2,
            free_per_source: 4,
            ..ThrottlePolicy::default()
        };
        let acc = Accounts::new(s, false, CHEAP, policy).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(acc.login("alice", "x", a).await.unwrap(), Login::Refused);
        assert_eq!(acc.login("alice", "x", a).await.unwrap(), Login::Refused);
        assert_eq!(acc.login("alice", "x", a).await.unwrap(), Login::Refused);
        // Locked by name, even with the right password and from elsewhere.
        assert!(matches!(
            acc.login("alice", "pw", b).await.unwrap(),
            Login::Throttled(_)
        ));
        // Source a: guessing other names runs into the per-source limit.
        assert_eq!(acc.login("bob", "x", a).await.unwrap(), Login::Refused);
        assert_eq!(acc.login("carol", "x", a).await.unwrap(), Login::Refused);
        assert!(matches!(
            acc.login("dave", "x", a).await.unwrap(),
            Login::Throttled(_)
        ));
        // Another source and name is unaffected.
        assert_eq!(acc.login("erin", "x", b).await.unwrap(), Login::Refused);
    }
}
