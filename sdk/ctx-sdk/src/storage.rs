//! Typed storage over the context's 32-byte-key store: maps, cells and
//! counters, each a handle on a *collection prefix*.
//!
//! Owns how a collection's entries are laid out:
//!
//! - **Keys.** An entry's storage key is the collection's prefix followed by
//!   the user key's bytes ([`StorageKey`]): zero-padded to 32 bytes when that
//!   fits, else the blake3 hash of it ([`storage_key`]). `#[state]` gives
//!   each field the prefix `"<field name>:"` (or the one its `#[prefix]`
//!   names) and refuses two prefixes of which one starts the other, so no
//!   two collections of an app share a key. Within a collection, user keys
//!   that differ only by trailing zero bytes share one (the padding), as
//!   they do in the bundled apps; [`crate::Key`] and fixed-width keys never
//!   do.
//! - **Values.** A value is stored as its [`Codec`]'s bytes: [`Postcard`]
//!   for any serde type (the default), [`Le`] for integers as fixed-width
//!   little-endian bytes, [`Raw`] for bytes and text as they are. A
//!   [`Counter`] is 8 bytes little-endian. A stored value that does not
//!   decode fails the call, with a message naming the collection.
//!
//! A collection holds no data: every read and write goes to the host, so a
//! handle is as fresh as the state the call runs on.

use std::fmt;
use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};

use crate::env;

/// A state field: a collection at a prefix.
pub trait Collection {
    fn at(prefix: &'static [u8]) -> Self;
}

/// The storage key of `prefix` followed by `user`: the bytes zero-padded to
/// 32 when they fit, else their blake3 hash.
pub fn storage_key(prefix: &[u8], user: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    if prefix.len() + user.len() <= 32 {
        key[..prefix.len()].copy_from_slice(prefix);
        key[prefix.len()..prefix.len() + user.len()].copy_from_slice(user);
        return key;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(prefix);
    hasher.update(user);
    *hasher.finalize().as_bytes()
}

/// A map key: its bytes after the collection's prefix.
pub trait StorageKey {
    fn key_bytes(&self, out: &mut Vec<u8>);
}

impl StorageKey for crate::Key {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl StorageKey for str {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl StorageKey for String {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl StorageKey for [u8] {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl StorageKey for Vec<u8> {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl<const N: usize> StorageKey for [u8; N] {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl<K: StorageKey + ?Sized> StorageKey for &K {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        (**self).key_bytes(out);
    }
}

macro_rules! integer_keys {
    ($($int:ty),*) => {$(
        /// Fixed-width little-endian bytes.
        impl StorageKey for $int {
            fn key_bytes(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

integer_keys!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

/// How a collection stores its values.
pub trait Codec<V> {
    fn encode(value: &V) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<V, String>;
}

/// Any serde type, with postcard.
pub struct Postcard;

impl<V: Serialize + DeserializeOwned> Codec<V> for Postcard {
    fn encode(value: &V) -> Vec<u8> {
        postcard::to_allocvec(value).expect("postcard serializes to memory")
    }
    fn decode(bytes: &[u8]) -> Result<V, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("not postcard: {e}"))
    }
}

/// Bytes and text as they are.
pub struct Raw;

impl Codec<Vec<u8>> for Raw {
    fn encode(value: &Vec<u8>) -> Vec<u8> {
        value.clone()
    }
    fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }
}

impl Codec<String> for Raw {
    fn encode(value: &String) -> Vec<u8> {
        value.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8 text".into())
    }
}

/// Integers as fixed-width little-endian bytes.
pub struct Le;

macro_rules! integer_codecs {
    ($($int:ty),*) => {$(
        impl Codec<$int> for Le {
            fn encode(value: &$int) -> Vec<u8> {
                value.to_le_bytes().to_vec()
            }
            fn decode(bytes: &[u8]) -> Result<$int, String> {
                bytes.try_into().map(<$int>::from_le_bytes).map_err(|_| {
                    format!("{} bytes, not the {} of a {}", bytes.len(), size_of::<$int>(), stringify!($int))
                })
            }
        }
    )*};
}

integer_codecs!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

/// Why a storage operation could not be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// The stored bytes are not a value of the collection's type.
    Malformed { prefix: Vec<u8>, reason: String },
    /// A counter would pass `u64::MAX`.
    Overflow,
    /// A counter would go below 0.
    Underflow,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Malformed { prefix, reason } => write!(
                f,
                "stored value in collection {:?} is malformed: {reason}",
                String::from_utf8_lossy(prefix)
            ),
            StorageError::Overflow => f.write_str("counter overflow"),
            StorageError::Underflow => f.write_str("counter underflow"),
        }
    }
}

impl std::error::Error for StorageError {}

fn read<V, C: Codec<V>>(prefix: &'static [u8], key: &[u8; 32]) -> Result<Option<V>, StorageError> {
    let Some(bytes) = env::storage_read(key) else {
        return Ok(None);
    };
    C::decode(&bytes)
        .map(Some)
        .map_err(|reason| StorageError::Malformed {
            prefix: prefix.to_vec(),
            reason,
        })
}

/// A failed read is a failed call: the state is not what this app writes.
fn or_fail<T>(result: Result<T, StorageError>) -> T {
    result.unwrap_or_else(|error| env::fail(&error.to_string()))
}

/// Keys of type `K` to values of type `V`, stored with codec `C`.
pub struct Map<K: ?Sized, V, C = Postcard> {
    prefix: &'static [u8],
    key: PhantomData<fn(&K)>,
    value: PhantomData<(V, C)>,
}

impl<K: ?Sized, V, C> Collection for Map<K, V, C> {
    fn at(prefix: &'static [u8]) -> Self {
        Map {
            prefix,
            key: PhantomData,
            value: PhantomData,
        }
    }
}

impl<K: StorageKey + ?Sized, V, C: Codec<V>> Map<K, V, C> {
    /// The storage key of `key` in this map.
    pub fn key_of(&self, key: &K) -> [u8; 32] {
        let mut user = Vec::new();
        key.key_bytes(&mut user);
        storage_key(self.prefix, &user)
    }

    /// The value at `key`; a stored value that does not decode fails the
    /// call.
    pub fn get(&self, key: &K) -> Option<V> {
        or_fail(self.try_get(key))
    }

    pub fn try_get(&self, key: &K) -> Result<Option<V>, StorageError> {
        read::<V, C>(self.prefix, &self.key_of(key))
    }

    pub fn contains(&self, key: &K) -> bool {
        env::storage_read(&self.key_of(key)).is_some()
    }

    pub fn insert(&mut self, key: &K, value: &V) {
        env::storage_write(&self.key_of(key), &C::encode(value));
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &K) -> bool {
        env::storage_remove(&self.key_of(key))
    }
}

/// One value at the collection's prefix.
pub struct Cell<V, C = Postcard> {
    prefix: &'static [u8],
    types: PhantomData<(V, C)>,
}

impl<V, C> Collection for Cell<V, C> {
    fn at(prefix: &'static [u8]) -> Self {
        Cell {
            prefix,
            types: PhantomData,
        }
    }
}

impl<V, C: Codec<V>> Cell<V, C> {
    fn key(&self) -> [u8; 32] {
        storage_key(self.prefix, &[])
    }

    /// The value; a stored value that does not decode fails the call.
    pub fn get(&self) -> Option<V> {
        or_fail(self.try_get())
    }

    pub fn try_get(&self) -> Result<Option<V>, StorageError> {
        read::<V, C>(self.prefix, &self.key())
    }

    pub fn set(&mut self, value: &V) {
        env::storage_write(&self.key(), &C::encode(value));
    }

    /// Removes the value; whether there was one.
    pub fn clear(&mut self) -> bool {
        env::storage_remove(&self.key())
    }
}

/// A u64 at the collection's prefix, 0 when absent, stored as 8 bytes
/// little-endian; additions and subtractions are checked.
pub struct Counter {
    cell: Cell<u64, Le>,
}

impl Collection for Counter {
    fn at(prefix: &'static [u8]) -> Self {
        Counter {
            cell: Cell::at(prefix),
        }
    }
}

impl Counter {
    pub fn get(&self) -> u64 {
        self.cell.get().unwrap_or(0)
    }

    /// Adds `amount`; the new value, or `Overflow` (nothing written).
    pub fn add(&mut self, amount: u64) -> Result<u64, StorageError> {
        let sum = self
            .get()
            .checked_add(amount)
            .ok_or(StorageError::Overflow)?;
        self.cell.set(&sum);
        Ok(sum)
    }

    /// Subtracts `amount`; the new value, or `Underflow` (nothing written).
    pub fn sub(&mut self, amount: u64) -> Result<u64, StorageError> {
        let rest = self
            .get()
            .checked_sub(amount)
            .ok_or(StorageError::Underflow)?;
        self.cell.set(&rest);
        Ok(rest)
    }
}

/// A u64 counter per key, each as a [`Counter`] stores it.
pub struct Counters<K: ?Sized> {
    map: Map<K, u64, Le>,
}

impl<K: ?Sized> Collection for Counters<K> {
    fn at(prefix: &'static [u8]) -> Self {
        Counters {
            map: Map::at(prefix),
        }
    }
}

impl<K: StorageKey + ?Sized> Counters<K> {
    pub fn get(&self, key: &K) -> u64 {
        self.map.get(key).unwrap_or(0)
    }

    /// Adds `amount` to `key`'s counter; the new value, or `Overflow`
    /// (nothing written).
    pub fn add(&mut self, key: &K, amount: u64) -> Result<u64, StorageError> {
        let sum = self
            .get(key)
            .checked_add(amount)
            .ok_or(StorageError::Overflow)?;
        self.map.insert(key, &sum);
        Ok(sum)
    }

    /// Subtracts `amount` from `key`'s counter; the new value, or
    /// `Underflow` (nothing written).
    pub fn sub(&mut self, key: &K, amount: u64) -> Result<u64, StorageError> {
        let rest = self
            .get(key)
            .checked_sub(amount)
            .ok_or(StorageError::Underflow)?;
        self.map.insert(key, &rest);
        Ok(rest)
    }
}
