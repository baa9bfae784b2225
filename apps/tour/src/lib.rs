//! tour: an app that uses every collection of ctx-sdk and every way a call
//! can fail, so `apps/conformance` can check that the compiled module and
//! the native build agree on all of it (outcomes, messages, roots).
//!
//! Owns nothing beyond that: its layout is the SDK's default one (each
//! field at `"<name>:"`), with a profile map whose long keys are hashed.

use ctx_sdk::value::Postcard;
use ctx_sdk::{Cell, Counter, Key, Map};
use serde::{Deserialize, Serialize};

/// A value stored with postcard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub visits: u32,
    pub tags: Vec<String>,
}

#[ctx_sdk::state]
pub struct Tour {
    greeting: Cell<String>,
    hits: Counter,
    profiles: Map<String, Profile>,
    notes: Map<Key, Vec<u8>, ctx_sdk::Raw>,
    /// Short keys ("f" and 4 bytes): no hashing, so a thousand writes fit
    /// a call's fuel.
    #[prefix = "f"]
    floods: Map<u32, u8, ctx_sdk::Le>,
}

#[ctx_sdk::app]
impl Tour {
    /// Sets the greeting; an empty one is refused.
    pub fn greet(&mut self, text: String) -> Result<(), String> {
        if text.is_empty() {
            return Err("a greeting is not empty".into());
        }
        self.greeting.set(&text);
        ctx_sdk::env::log(&format!("greeting set to {text}"));
        Ok(())
    }

    pub fn greeting(&self) -> Option<String> {
        self.greeting.get()
    }

    /// Counts a hit; the new count.
    pub fn hit(&mut self, by: u64) -> Result<u64, ctx_sdk::StorageError> {
        self.hits.add(by)
    }

    /// Records a visit of `name` (any length: long names are hashed into
    /// the key) with a tag.
    pub fn visit(&mut self, name: String, tag: String) -> u32 {
        let mut profile = self.profiles.get(&name).unwrap_or(Profile {
            name: name.clone(),
            visits: 0,
            tags: Vec::new(),
        });
        profile.visits += 1;
        profile.tags.push(tag);
        self.profiles.insert(&name, &profile);
        profile.visits
    }

    pub fn profile(&self, name: String) -> Option<Postcard<Profile>> {
        self.profiles.get(&name).map(Postcard)
    }

    /// Writes a note, then panics when asked: the note must not survive.
    pub fn note(&mut self, key: Key, text: Vec<u8>, explode: bool) {
        self.notes.insert(&key, &text);
        if explode {
            panic!("exploded after writing {} bytes", text.len());
        }
    }

    /// Writes `count` distinct keys (more than `CALL_WRITES_MAX` fails).
    pub fn flood(&mut self, count: u32) {
        for index in 0..count {
            self.floods.insert(&index, &0);
        }
    }

    /// Stores a value of `len` bytes (more than `VALUE_BYTES_MAX` fails).
    pub fn big(&mut self, len: u32) {
        self.notes.insert(&Key::default(), &vec![7; len as usize]);
    }

    /// Fails through the host directly.
    pub fn refuse(&self, reason: String) {
        ctx_sdk::env::fail(&reason)
    }

    /// Reads the greeting cell as a counter: the stored bytes are not a
    /// u64, so the call fails with a message naming the collection.
    pub fn misread(&self) -> u64 {
        let as_counter: Cell<u64, ctx_sdk::Le> = ctx_sdk::Collection::at(b"greeting:");
        as_counter.get().unwrap_or(0)
    }
}
