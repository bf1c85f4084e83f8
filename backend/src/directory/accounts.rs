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

// The rules live with the protocol; re-exported for the account commands.
pub use roundtable_shared::directory::{valid_name, valid_password};

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
///
/// Two counters per attempt: the name tried and the source address. An
/// attempt holds a reservation on both while its password is verified, so
/// concurrent guesses cannot all slip in before the first failure is
/// recorded: at most the allowance left is ever in flight, and past it one
/// attempt at a time, each failure doubling the lockout. An attempt that
/// finds no room waits for its turn (bounded by [`TURN_WAIT`]) rather than
/// being refused, so that many honest logins at once from one address
/// (a site behind NAT) queue instead of failing. The lockout of a
/// name is capped short (`max_name_lockout`): anyone can trigger it, so it
/// must not lock the real user out for long. The lockout of a source can
/// grow longer (`max_source_lockout`): only that source suffers from it.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures per name allowed before lockouts begin.
    pub free_per_name: u32,
    /// Failures per source address allowed before lockouts begin.
    pub free_per_source: u32,
    /// First lockout; each further failure doubles it, up to the caps.
    pub base_lockout: Duration,
    pub max_name_lockout: Duration,
    pub max_source_lockout: Duration,
    /// A key with no failure for this long is forgotten.
    pub forget_after: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            free_per_name: 5,
            free_per_source: 20,
            base_lockout: Duration::from_secs(1),
            max_name_lockout: Duration::from_secs(30),
            max_source_lockout: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    /// Attempts reserved and still being verified.
    in_flight: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Name,
    Source,
}

/// Failed-login bookkeeping keyed by `name:<n>` and `ip:<a>`; bounded in size.
#[derive(Debug)]
struct Throttle {
    policy: ThrottlePolicy,
    strikes: Mutex<HashMap<String, Strikes>>,
    /// Signalled whenever an attempt ends (a turn may be free).
    turn: tokio::sync::Notify,
}

const MAX_THROTTLE_KEYS: usize = 100_000;

/// Longest an attempt waits for a turn before it is refused as throttled.
pub const TURN_WAIT: Duration = Duration::from_secs(10);

/// Why an attempt cannot start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotNow {
    /// Locked out for this long.
    Locked(Duration),
    /// The allowance is taken by attempts in flight: wait for one to end.
    Busy,
}

/// What a finished attempt tells the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
}

impl Throttle {
    fn keys(name: &str, source: IpAddr) -> [(String, Which); 2] {
        [
            (format!("name:{name}"), Which::Name),
            (format!("ip:{}", source.to_canonical()), Which::Source),
        ]
    }

    fn free(&self, which: Which) -> u32 {
        match which {
            Which::Name => self.policy.free_per_name,
            Which::Source => self.policy.free_per_source,
        }
    }

    fn max_lockout(&self, which: Which) -> Duration {
        match which {
            Which::Name => self.policy.max_name_lockout,
            Which::Source => self.policy.max_source_lockout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Strikes>> {
        self.strikes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves an attempt for `name` from `source`, or says why not. The
    /// reservation counts as a failure-to-be until [`Self::finish`].
    fn begin(&self, name: &str, source: IpAddr, now: Instant) -> Result<(), NotNow> {
        let keys = Self::keys(name, source);
        let mut map = self.lock();
        let mut wait: Option<NotNow> = None;
        for (key, which) in &keys {
            let Some(s) = map.get(key) else { continue };
            let failures = if now.duration_since(s.last) >= self.policy.forget_after {
                0
            } else {
                s.failures
            };
            match s.locked_until {
                Some(until) if until > now => {
                    let w = until - now;
                    wait = Some(match wait {
                        Some(NotNow::Locked(o)) => NotNow::Locked(o.max(w)),
                        _ => NotNow::Locked(w),
                    });
                }
                // Past the allowance, attempts go one at a time.
                _ if s.in_flight > 0 && failures + s.in_flight >= self.free(*which) => {
                    wait = wait.or(Some(NotNow::Busy));
                }
                _ => {}
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        if map.len() >= MAX_THROTTLE_KEYS {
            let forget = self.policy.forget_after;
            map.retain(|_, s| {
                s.in_flight > 0
                    || now.duration_since(s.last) < forget
                    || s.locked_until.is_some_and(|u| u > now)
            });
        }
        for (key, _) in keys {
            let s = map.entry(key).or_insert(Strikes {
                failures: 0,
                in_flight: 0,
                last: now,
                locked_until: None,
            });
            s.in_flight += 1;
        }
        Ok(())
    }

    /// Releases the reservation of [`begin`], recording what happened
    /// (`None`: the attempt was abandoned and tells nothing).
    fn finish(&self, name: &str, source: IpAddr, outcome: Option<Outcome>, now: Instant) {
        let mut map = self.lock();
        for (key, which) in Self::keys(name, source) {
            let Some(s) = map.get_mut(&key) else { continue };
            s.in_flight = s.in_flight.saturating_sub(1);
            match outcome {
                Some(Outcome::Failed) => {
                    if now.duration_since(s.last) >= self.policy.forget_after {
                        s.failures = 0;
                    }
                    s.failures += 1;
                    s.last = now;
                    let free = self.free(which);
                    if s.failures > free {
                        let doublings = (s.failures - free - 1).min(16);
                        let lock = (self.policy.base_lockout * 2u32.pow(doublings))
                            .min(self.max_lockout(which));
                        s.locked_until = Some(now + lock);
                    }
                }
                // The right password clears the name's record, not the source's.
                Some(Outcome::Succeeded) if which == Which::Name => {
                    s.failures = 0;
                    s.locked_until = None;
                }
                _ => {}
            }
            if s.in_flight == 0 && s.failures == 0 && s.locked_until.is_none() {
                map.remove(&key);
            }
        }
        drop(map);
        self.turn.notify_waiters();
    }

    /// Waits for a turn of `name` from `source` (at most `TURN_WAIT`), or
    /// says how long the caller is locked out.
    async fn turn(&self, name: &str, source: IpAddr) -> Result<(), Duration> {
        let deadline = tokio::time::Instant::now() + TURN_WAIT;
        loop {
            // Registered before checking, so that an end in between is not missed.
            let ended = self.turn.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match self.begin(name, source, Instant::now()) {
                Ok(()) => return Ok(()),
                Err(NotNow::Locked(w)) => return Err(w),
                Err(NotNow::Busy) => {
                    if tokio::time::timeout_at(deadline, ended).await.is_err() {
                        return Err(self.policy.base_lockout);
                    }
                }
            }
        }
    }
}

/// A reserved attempt; released as abandoned if dropped unfinished (e.g.
/// the session was cancelled while the hash was being verified).
struct Attempt<'a> {
    throttle: &'a Throttle,
    name: &'a str,
    source: IpAddr,
    done: bool,
}

impl Attempt<'_> {
    fn finish(mut self, outcome: Option<Outcome>) {
        self.done = true;
        self.throttle
            .finish(self.name, self.source, outcome, Instant::now());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle
                .finish(self.name, self.source, None, Instant::now());
        }
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
                turn: tokio::sync::Notify::new(),
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
        if let Err(wait) = self.throttle.turn(name, source).await {
            return Ok(Login::Throttled(wait));
        }
        let attempt = Attempt {
            throttle: &self.throttle,
            name,
            source,
            done: false,
        };
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
        attempt.finish(match outcome {
            Login::Refused => Some(Outcome::Failed),
            Login::Accepted | Login::Registered => Some(Outcome::Succeeded),
            Login::Throttled(_) => None,
        });
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

    fn throttle(policy: ThrottlePolicy) -> Throttle {
        Throttle {
            policy,
            strikes: Mutex::new(HashMap::new()),
            turn: tokio::sync::Notify::new(),
        }
    }

    #[test]
    fn attempts_in_flight_count_against_the_allowance() {
        let t = throttle(ThrottlePolicy::default());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        for _ in 0..5 {
            t.begin("alice", a, now).unwrap();
        }
        // Nothing recorded yet, but five guesses are being verified: no sixth.
        assert!(t.begin("alice", b, now).is_err());
        for _ in 0..5 {
            t.finish("alice", a, Some(Outcome::Failed), now);
        }
        // Past the allowance: one at a time.
        t.begin("alice", b, now).unwrap();
        assert!(t.begin("alice", a, now).is_err());
        t.finish("alice", b, Some(Outcome::Failed), now);
        assert_eq!(
            t.begin("alice", b, now),
            Err(NotNow::Locked(Duration::from_secs(1)))
        );
        // An abandoned attempt releases its reservation and records nothing.
        let later = now + Duration::from_secs(1);
        t.begin("alice", b, later).unwrap();
        t.finish("alice", b, None, later);
        t.begin("alice", b, later).unwrap();
        t.finish("alice", b, Some(Outcome::Succeeded), later);
        assert!(t.begin("alice", a, later).is_ok());
    }

    #[test]
    fn a_name_lockout_stays_short_a_source_lockout_grows() {
        let t = throttle(ThrottlePolicy::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut now = Instant::now();
        let mut last_wait = Duration::ZERO;
        for i in 0..40 {
            t.begin("alice", a, now).unwrap();
            t.finish("alice", a, Some(Outcome::Failed), now);
            let other: IpAddr = "10.9.9.9".parse().unwrap();
            match t.begin("alice", other, now) {
                Ok(()) => t.finish("alice", other, None, now),
                Err(NotNow::Locked(w)) => {
                    assert!(w <= Duration::from_secs(30), "attempt {i}: {w:?}");
                    last_wait = w;
                }
                Err(NotNow::Busy) => panic!("nothing in flight"),
            }
            // Jump past every lock so the next attempt is admitted.
            now += Duration::from_secs(301);
        }
        assert_eq!(last_wait, Duration::from_secs(30));
        // The source, meanwhile, is locked for the long cap.
        let wait = t
            .begin("bob", a, now - Duration::from_secs(301))
            .unwrap_err();
        assert_eq!(wait, NotNow::Locked(Duration::from_secs(300)));
    }
}
