//! The rewrite of a module for the reset: exports of its mutable globals
//! under reserved names and, for the tracked reset, the instrumentation of
//! every memory write to mark the chunk it touches.
//!
//! Owns: the rewrite depends on the module's bytes only; it moves no
//! function, type, global or local index of the module.

use super::*;

/// The export of the dirty-chunk global the instrumentation adds.
pub(super) const DIRTY_EXPORT: &str = "ctx:dirty";

/// The export of mutable global `index`, added for the reset.
pub(super) fn global_export_name(index: u32) -> String {
    format!("{RESERVED_EXPORT_PREFIX}global:{index}")
}

/// The rewritten module: the same module plus, for the runtime, exports of
/// the mutable globals and, if `track` gives a chunk shift, an i64 global of
/// dirty chunks (exported as `DIRTY_EXPORT`) that every memory write updates.
///
/// Tracking instruments the code: before each store, the store's address
/// (plus its static offset) marks its chunk; a store may spill up to 7 bytes
/// into the next chunk, which the reset copies too. Before each
/// `memory.fill`/`copy`/`init`, a helper function appended to the module
/// marks every chunk of the destination range. Nothing else changes: no
/// function, type, global or local index of the module moves.
pub(super) fn rewrite(
    wasm: &[u8],
    analysis: &Analysis,
    track: Option<u32>,
) -> Result<Vec<u8>, AppError> {
    let malformed = || AppError::Invalid("malformed section layout".to_owned());
    let dirty_global = analysis.globals_len;
    let needs_helper = track.is_some()
        && analysis
            .bodies
            .iter()
            .any(|body| body.writes.iter().any(|w| matches!(w, Write::Bulk { .. })));
    let helper_func = analysis.imported_funcs
        + u32::try_from(analysis.func_types.len()).map_err(|_| malformed())?;

    let mut exports = Vec::new();
    let mut export_count = 0u32;
    for &index in &analysis.mutable_globals {
        write_name(&mut exports, &global_export_name(index));
        exports.push(0x03); // a global
        write_leb_u32(&mut exports, index);
        export_count += 1;
    }
    if track.is_some() {
        write_name(&mut exports, DIRTY_EXPORT);
        exports.push(0x03);
        write_leb_u32(&mut exports, dirty_global);
        export_count += 1;
    }
    // The dirty global: i64, mutable, initialized to 0.
    let dirty_decl = [0x7e, 0x01, 0x42, 0x00, 0x0b];

    let mut out = Vec::with_capacity(wasm.len() + wasm.len() / 4 + 64);
    out.extend_from_slice(&wasm[..8]);
    let mut global_section_seen = false;
    for section in sections(wasm).map_err(|()| malformed())? {
        let content = &wasm[section.content.clone()];
        let replaced = match (section.id, track) {
            (SECTION_TYPE, Some(_)) if needs_helper => {
                // (i32, i32) -> ()
                Some(
                    append_to_vec(content, 1, &[0x60, 0x02, 0x7f, 0x7f, 0x00])
                        .ok_or_else(malformed)?,
                )
            }
            (SECTION_FUNCTION, Some(_)) if needs_helper => {
                let mut entry = Vec::new();
                write_leb_u32(&mut entry, analysis.types_len);
                Some(append_to_vec(content, 1, &entry).ok_or_else(malformed)?)
            }
            (SECTION_GLOBAL, Some(_)) => {
                global_section_seen = true;
                Some(append_to_vec(content, 1, &dirty_decl).ok_or_else(malformed)?)
            }
            (SECTION_EXPORT, _) => {
                if track.is_some() && !global_section_seen {
                    let mut globals = Vec::new();
                    write_leb_u32(&mut globals, 1);
                    globals.extend_from_slice(&dirty_decl);
                    write_section(&mut out, SECTION_GLOBAL, &globals);
                }
                Some(append_to_vec(content, export_count, &exports).ok_or_else(malformed)?)
            }
            (SECTION_CODE, Some(shift)) => Some(
                instrument_code(
                    wasm,
                    analysis,
                    shift,
                    needs_helper.then_some(helper_func),
                    dirty_global,
                )
                .ok_or_else(malformed)?,
            ),
            _ => None,
        };
        match replaced {
            Some(content) => write_section(&mut out, section.id, &content),
            None => out.extend_from_slice(&wasm[section.whole]),
        }
    }
    Ok(out)
}

/// The code section with every body instrumented, and the helper appended.
pub(super) fn instrument_code(
    wasm: &[u8],
    analysis: &Analysis,
    shift: u32,
    helper: Option<u32>,
    dirty: u32,
) -> Option<Vec<u8>> {
    assert_eq!(analysis.bodies.len(), analysis.func_types.len());
    let mut out = Vec::with_capacity(wasm.len());
    let count = u32::try_from(analysis.bodies.len()).ok()? + u32::from(helper.is_some());
    write_leb_u32(&mut out, count);
    let mut body_out = Vec::new();
    for (body, &ty) in analysis.bodies.iter().zip(&analysis.func_types) {
        body_out.clear();
        let params = *analysis.type_params.get(ty as usize)?;
        // The new locals follow the parameters and the body's own locals.
        let base = u32::try_from(u64::from(params) + body.locals).ok()?;
        let (_, groups_len) = read_leb_u32(&wasm[body.range.start..])?;
        write_leb_u32(&mut body_out, body.local_groups.checked_add(4)?);
        body_out.extend_from_slice(&wasm[body.range.start + groups_len..body.code_start]);
        // 3 i32 (address, or bulk operands; i32 value), i64, f32, f64.
        body_out.extend_from_slice(&[0x03, 0x7f, 0x01, 0x7e, 0x01, 0x7d, 0x01, 0x7c]);
        let locals = Scratch {
            addr: base,
            i32: base + 1,
            n: base + 2,
            i64: base + 3,
            f32: base + 4,
            f64: base + 5,
        };
        let mut copied = body.code_start;
        for write in &body.writes {
            let at = match *write {
                Write::Store { at, .. } | Write::Bulk { at } => at,
            };
            body_out.extend_from_slice(&wasm[copied..at]);
            copied = at;
            match *write {
                Write::Store { value, offset, .. } => {
                    mark_store(&mut body_out, &locals, value, offset, shift, dirty);
                }
                Write::Bulk { .. } => mark_bulk(&mut body_out, &locals, helper?),
            }
        }
        body_out.extend_from_slice(&wasm[copied..body.range.end]);
        write_leb_u32(&mut out, u32::try_from(body_out.len()).ok()?);
        out.extend_from_slice(&body_out);
    }
    if helper.is_some() {
        body_out.clear();
        mark_range_helper(&mut body_out, shift, dirty);
        write_leb_u32(&mut out, u32::try_from(body_out.len()).ok()?);
        out.extend_from_slice(&body_out);
    }
    Some(out)
}

/// The locals the instrumentation adds to a function.
pub(super) struct Scratch {
    pub(super) addr: u32,
    pub(super) i32: u32,
    pub(super) n: u32,
    pub(super) i64: u32,
    pub(super) f32: u32,
    pub(super) f64: u32,
}

// The opcodes the instrumentation emits.
pub(super) const OP_IF: u8 = 0x04;
pub(super) const OP_END: u8 = 0x0b;
pub(super) const OP_RETURN: u8 = 0x0f;
pub(super) const OP_CALL: u8 = 0x10;
pub(super) const OP_LOCAL_GET: u8 = 0x20;
pub(super) const OP_LOCAL_SET: u8 = 0x21;
pub(super) const OP_GLOBAL_GET: u8 = 0x23;
pub(super) const OP_GLOBAL_SET: u8 = 0x24;
pub(super) const OP_I64_CONST: u8 = 0x42;
pub(super) const OP_I32_EQZ: u8 = 0x45;
pub(super) const OP_I64_GT_U: u8 = 0x56;
pub(super) const OP_I64_ADD: u8 = 0x7c;
pub(super) const OP_I64_SUB: u8 = 0x7d;
pub(super) const OP_I64_AND: u8 = 0x83;
pub(super) const OP_I64_OR: u8 = 0x84;
pub(super) const OP_I64_SHL: u8 = 0x86;
pub(super) const OP_I64_SHR_U: u8 = 0x88;
pub(super) const OP_I64_EXTEND_I32_U: u8 = 0xad;
pub(super) const BLOCK_EMPTY: u8 = 0x40;

pub(super) fn op_index(out: &mut Vec<u8>, op: u8, index: u32) {
    out.push(op);
    write_leb_u32(out, index);
}

pub(super) fn op_i64_const(out: &mut Vec<u8>, value: i64) {
    out.push(OP_I64_CONST);
    write_leb_i64(out, value);
}

/// Before a store with `[address, value]` on the stack: marks the chunk of
/// `address + offset`, leaving the stack as it was.
///
/// ```text
/// local.set $value  local.set $addr
/// global.get $dirty
/// i64.const 1  (address + offset) >> shift  i64.shl  i64.or
/// global.set $dirty
/// local.get $addr  local.get $value
/// ```
///
/// A chunk index of 64 or more wraps around in `i64.shl`, marking a wrong
/// chunk; such a store is out of bounds and traps without writing.
pub(super) fn mark_store(
    out: &mut Vec<u8>,
    locals: &Scratch,
    value: StoreValue,
    offset: u64,
    shift: u32,
    dirty: u32,
) {
    let value_local = match value {
        StoreValue::I32 => locals.i32,
        StoreValue::I64 => locals.i64,
        StoreValue::F32 => locals.f32,
        StoreValue::F64 => locals.f64,
    };
    op_index(out, OP_LOCAL_SET, value_local);
    op_index(out, OP_LOCAL_SET, locals.addr);
    op_index(out, OP_GLOBAL_GET, dirty);
    op_i64_const(out, 1);
    op_index(out, OP_LOCAL_GET, locals.addr);
    out.push(OP_I64_EXTEND_I32_U);
    if offset != 0 {
        // A memarg offset of a 32-bit memory fits in 32 bits.
        op_i64_const(out, i64::try_from(offset).unwrap_or(i64::MAX));
        out.push(OP_I64_ADD);
    }
    op_i64_const(out, i64::from(shift));
    out.push(OP_I64_SHR_U);
    out.push(OP_I64_SHL);
    out.push(OP_I64_OR);
    op_index(out, OP_GLOBAL_SET, dirty);
    op_index(out, OP_LOCAL_GET, locals.addr);
    op_index(out, OP_LOCAL_GET, value_local);
}

/// Before `memory.fill`/`copy`/`init` with `[dst, x, len]` on the stack:
/// calls the helper on `(dst, len)`, leaving the stack as it was.
pub(super) fn mark_bulk(out: &mut Vec<u8>, locals: &Scratch, helper: u32) {
    op_index(out, OP_LOCAL_SET, locals.n);
    op_index(out, OP_LOCAL_SET, locals.i32);
    op_index(out, OP_LOCAL_SET, locals.addr);
    op_index(out, OP_LOCAL_GET, locals.addr);
    op_index(out, OP_LOCAL_GET, locals.n);
    op_index(out, OP_CALL, helper);
    op_index(out, OP_LOCAL_GET, locals.addr);
    op_index(out, OP_LOCAL_GET, locals.i32);
    op_index(out, OP_LOCAL_GET, locals.n);
}

/// The helper `(param $dst i32) (param $len i32)` that marks every chunk of
/// `[dst, dst + len)`, as `chunk_mask` does:
///
/// ```text
/// (local $first i64) (local $last i64)
/// (if (i32.eqz (local.get $len)) (then (return)))
/// (local.set $first (i64.shr_u (i64.extend_i32_u (local.get $dst)) (i64.const shift)))
/// (local.set $last (i64.shr_u (i64.sub (i64.add (i64.extend_i32_u (local.get $dst))
///                                              (i64.extend_i32_u (local.get $len)))
///                                      (i64.const 1))
///                             (i64.const shift)))
/// (if (i64.gt_u (local.get $first) (i64.const 63)) (then (return)))
/// (if (i64.gt_u (local.get $last) (i64.const 63)) (then (local.set $last (i64.const 63))))
/// (global.set $dirty (i64.or (global.get $dirty)
///   (i64.and (i64.shl (i64.const -1) (local.get $first))
///            (i64.shr_u (i64.const -1) (i64.sub (i64.const 63) (local.get $last))))))
/// ```
pub(super) fn mark_range_helper(out: &mut Vec<u8>, shift: u32, dirty: u32) {
    let (dst, len, first, last) = (0, 1, 2, 3);
    out.extend_from_slice(&[0x01, 0x02, 0x7e]); // locals: 2 x i64
    op_index(out, OP_LOCAL_GET, len);
    out.extend_from_slice(&[OP_I32_EQZ, OP_IF, BLOCK_EMPTY, OP_RETURN, OP_END]);
    op_index(out, OP_LOCAL_GET, dst);
    out.push(OP_I64_EXTEND_I32_U);
    op_i64_const(out, i64::from(shift));
    out.push(OP_I64_SHR_U);
    op_index(out, OP_LOCAL_SET, first);
    op_index(out, OP_LOCAL_GET, dst);
    out.push(OP_I64_EXTEND_I32_U);
    op_index(out, OP_LOCAL_GET, len);
    out.push(OP_I64_EXTEND_I32_U);
    out.push(OP_I64_ADD);
    op_i64_const(out, 1);
    out.push(OP_I64_SUB);
    op_i64_const(out, i64::from(shift));
    out.push(OP_I64_SHR_U);
    op_index(out, OP_LOCAL_SET, last);
    op_index(out, OP_LOCAL_GET, first);
    op_i64_const(out, 63);
    out.extend_from_slice(&[OP_I64_GT_U, OP_IF, BLOCK_EMPTY, OP_RETURN, OP_END]);
    op_index(out, OP_LOCAL_GET, last);
    op_i64_const(out, 63);
    out.extend_from_slice(&[OP_I64_GT_U, OP_IF, BLOCK_EMPTY]);
    op_i64_const(out, 63);
    op_index(out, OP_LOCAL_SET, last);
    out.push(OP_END);
    op_index(out, OP_GLOBAL_GET, dirty);
    op_i64_const(out, -1);
    op_index(out, OP_LOCAL_GET, first);
    out.push(OP_I64_SHL);
    op_i64_const(out, -1);
    op_i64_const(out, 63);
    op_index(out, OP_LOCAL_GET, last);
    out.push(OP_I64_SUB);
    out.push(OP_I64_SHR_U);
    out.push(OP_I64_AND);
    out.push(OP_I64_OR);
    op_index(out, OP_GLOBAL_SET, dirty);
    out.push(OP_END);
}

pub(super) const SECTION_TYPE: u8 = 1;
pub(super) const SECTION_FUNCTION: u8 = 3;
pub(super) const SECTION_GLOBAL: u8 = 6;
pub(super) const SECTION_EXPORT: u8 = 7;
pub(super) const SECTION_CODE: u8 = 10;

/// A section of a module: its id, its whole extent and its content.
pub(super) struct Section {
    pub(super) id: u8,
    pub(super) whole: Range<usize>,
    pub(super) content: Range<usize>,
}

/// The sections of a module whose header is valid.
pub(super) fn sections(wasm: &[u8]) -> Result<Vec<Section>, ()> {
    let mut sections = Vec::new();
    let mut pos = 8; // magic and version
    while pos < wasm.len() {
        let id = wasm[pos];
        let (size, size_len) = read_leb_u32(wasm.get(pos + 1..).ok_or(())?).ok_or(())?;
        let start = pos + 1 + size_len;
        let end = start
            .checked_add(size as usize)
            .filter(|&end| end <= wasm.len())
            .ok_or(())?;
        sections.push(Section {
            id,
            whole: pos..end,
            content: start..end,
        });
        pos = end;
    }
    Ok(sections)
}

pub(super) fn write_section(out: &mut Vec<u8>, id: u8, content: &[u8]) {
    out.push(id);
    // A section of a module under APP_BYTES_MAX, grown by the rewrite, stays
    // far below 4 GiB.
    write_leb_u32(out, u32::try_from(content.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(content);
}

/// A vector section's content with `count` more entries, encoded in `extra`.
pub(super) fn append_to_vec(content: &[u8], count: u32, extra: &[u8]) -> Option<Vec<u8>> {
    let (old, old_len) = read_leb_u32(content)?;
    let mut out = Vec::with_capacity(content.len() + extra.len() + 5);
    write_leb_u32(&mut out, old.checked_add(count)?);
    out.extend_from_slice(&content[old_len..]);
    out.extend_from_slice(extra);
    Some(out)
}

pub(super) fn write_name(out: &mut Vec<u8>, name: &str) {
    write_leb_u32(out, u32::try_from(name.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(name.as_bytes());
}

/// An unsigned LEB128 u32 and its length in bytes.
pub(super) fn read_leb_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        if i == 4 && byte & 0x70 != 0 {
            return None; // bits beyond the 32nd
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

pub(super) fn write_leb_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(super) fn write_leb_i64(out: &mut Vec<u8>, mut value: i64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        let done = (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
