//! Putting an instance back in its initial state after a call.
//!
//! Owns the invariant that every call starts from the module's initial
//! memory and globals: after [`restore`] returns `true`, the memory equals
//! the initial image (asserted in debug builds) and every mutable global
//! holds its initial value; when it cannot guarantee that (the memory grew,
//! or the module changes instance state), it returns `false` and the next
//! call gets a fresh instance.

use super::*;

/// The granularity of the compare-and-copy restore: each piece of this many
/// bytes that differs from the initial image is copied back. Pieces this
/// small are copied with plain vector moves (larger copies may take glibc's
/// `rep movsb` path, which is many times slower on some CPUs when source and
/// destination are close modulo 4 KiB).
pub(super) const RESET_PIECE_BYTES: usize = 1024;

/// Dirty tracking splits the memory in 64 chunks of at least `1 << 10`
/// bytes; see [`chunk_shift`].
pub(super) const CHUNK_SHIFT_MIN: u32 = 10;

/// A store writes at most 8 bytes, so it spills at most 7 bytes past the
/// chunk its address marks.
pub(super) const STORE_SPILL_BYTES: usize = 7;

/// How an instance is put back in its initial state after a call. In every
/// case the mutable globals are set back to their initial values.
///
/// Measured on `kv.set` (release, one core): a fresh instance per call runs
/// about 160 000 calls/s, `Compare` 430 000, `Tracked` 1 070 000, and a
/// reused instance with no reset at all (incorrect: the ceiling) 1 450 000.
/// With a 17-page memory (a typical Rust app) a fresh instance or `Compare`
/// costs about 35 µs per call, `Tracked` 2.7 µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    /// The code is instrumented to mark the 64ths of the memory (chunks of
    /// `1 << chunk_shift` bytes) it writes; only those are restored.
    Tracked { chunk_shift: u32 },
    /// Compare the whole memory with its initial image and copy back the
    /// pieces that differ. For modules the instrumentation does not handle.
    Compare,
    /// Throw the instance away. For modules whose code can change instance
    /// state the runtime cannot restore (tables, dropped segments).
    Rebuild,
}

/// Puts `live` back in its initial state. Returns `false` if it cannot be
/// reused (its memory grew, or the module needs a fresh instance per call),
/// so that the next call instantiates afresh.
pub(super) fn restore(live: &mut Live, memory_initial: &[u8], reset: Reset) -> bool {
    let marks = match (reset, live.dirty) {
        (Reset::Rebuild, _) => return false,
        (Reset::Tracked { chunk_shift }, Some(dirty)) => match dirty.get(&live.store) {
            Val::I64(bits) => Some((bits as u64 | live.store.data().dirty, chunk_shift)),
            _ => None,
        },
        _ => None,
    };
    live.store.data_mut().dirty = 0;
    let memory = live.memory.data_mut(&mut live.store);
    if memory.len() != memory_initial.len() {
        return false;
    }
    match marks {
        Some((marks, chunk_shift)) => restore_chunks(memory, memory_initial, marks, chunk_shift),
        None => restore_pieces(memory, memory_initial),
    }
    debug_assert!(memory == memory_initial, "the reset missed a write");
    for (global, initial) in &live.globals {
        if global.set(&mut live.store, initial.clone()).is_err() {
            return false;
        }
    }
    true
}

/// Restores the marked chunks of `1 << chunk_shift` bytes, each with the
/// bytes a store at its end may spill into the next one.
pub(super) fn restore_chunks(memory: &mut [u8], initial: &[u8], marks: u64, chunk_shift: u32) {
    let mut marks = marks;
    while marks != 0 {
        let chunk = marks.trailing_zeros();
        marks &= marks - 1;
        let start = (chunk as usize) << chunk_shift;
        if start >= memory.len() {
            break;
        }
        let end = (start + (1 << chunk_shift) + STORE_SPILL_BYTES).min(memory.len());
        restore_pieces(&mut memory[start..end], &initial[start..end]);
    }
}

/// Copies back the pieces of `memory` that differ from `initial`.
pub(super) fn restore_pieces(memory: &mut [u8], initial: &[u8]) {
    assert_eq!(memory.len(), initial.len());
    for (piece, initial) in memory
        .chunks_mut(RESET_PIECE_BYTES)
        .zip(initial.chunks(RESET_PIECE_BYTES))
    {
        if piece != initial {
            piece.copy_from_slice(initial);
        }
    }
}

/// The log2 of the chunk size for dirty tracking: the smallest chunk of at
/// least 1 KiB such that 64 chunks (one bit each in an i64) cover the memory.
pub(super) fn chunk_shift(memory_bytes: u64) -> u32 {
    let chunk = memory_bytes.div_ceil(64).max(1 << CHUNK_SHIFT_MIN);
    chunk.next_power_of_two().trailing_zeros()
}

/// The bit mask of the chunks `range` touches, for chunks of `1 << shift`
/// bytes; chunks past the 64th are ignored (the memory has at most 64).
pub(super) fn chunk_mask(range: &Range<usize>, shift: u32) -> u64 {
    if range.is_empty() {
        return 0;
    }
    let first = range.start >> shift;
    let last = ((range.end - 1) >> shift).min(63);
    if first > 63 {
        return 0;
    }
    (u64::MAX << first) & (u64::MAX >> (63 - last))
}
