//! Identity keys at the directory (issue 13): who has pinned which key.
//!
//! An account's key is pinned on its first `KEY`; from then on only an
//! explicit act replaces it: the account's own `REKEY` naming the pinned
//! key, or the operator's `roundtable directory reset-key NAME`. Every
//! call goes to the store rather than a cache, so a `reset-key` run in
//! another process is seen by the next command. Public keys are not
//! secret: they may be logged.

use roundtable_shared::directory::{KeyEntry, PublicKey};

use crate::store::directory::{DirectoryStore, Pin, Replace};
use crate::store::StoreError;

/// The pinned keys, through the directory's store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Keys {
    store: DirectoryStore,
}

impl Keys {
    pub fn new(store: DirectoryStore) -> Self {
        Keys { store }
    }

    /// `KEY`: pins `key` for `name` unless another key is pinned.
    pub async fn publish(&self, name: &str, key: PublicKey) -> Result<Pin, StoreError> {
        let name = name.to_owned();
        self.store
            .run(move |s| s.pin_key(&name, key.as_bytes()))
            .await
    }

    /// `REKEY`: replaces `name`'s pin with `new` if the pin is `old`.
    pub async fn replace(
        &self,
        name: &str,
        old: PublicKey,
        new: PublicKey,
    ) -> Result<Replace, StoreError> {
        let name = name.to_owned();
        self.store
            .run(move |s| s.replace_key(&name, old.as_bytes(), new.as_bytes()))
            .await
    }

    /// `KEYQUERY`: the pinned keys of those of `names` that have one, in
    /// the order asked.
    pub async fn lookup(&self, names: Vec<String>) -> Result<Vec<KeyEntry>, StoreError> {
        let found = self.store.run(move |s| s.keys_of(&names)).await?;
        Ok(found
            .into_iter()
            .map(|(name, key)| KeyEntry {
                name,
                key: PublicKey(key),
            })
            .collect())
    }
}
