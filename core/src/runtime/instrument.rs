//! The rewrite of a module for the reset, with `wasm-encoder`'s reencoder:
//! exports of its mutable globals under reserved names and, for the tracked
//! reset, the instrumentation of every memory write to mark the 64th of the
//! memory it touches in a hidden global.
//!
//! Owns these invariants:
//! - the rewrite depends on the module's bytes only, so every member runs
//!   the same code (the instrumentation costs fuel);
//! - it moves no function, type, global or local index of the module: what
//!   it adds (globals, exports) comes after everything the module has;
//! - **it does not change what the module may do**: no function gets a
//!   local, no call is added (so no frame), and at every instrumented
//!   instruction the code it inserts keeps the operand stack no deeper than
//!   the instruction's own operands had it. wasmi sizes a frame as its
//!   locals plus its deepest operand stack, so every frame is the size plain
//!   wasmi gives it, and recursion reaches the same depth. Scratch values
//!   live in globals the module cannot name, always written before they are
//!   read within one straight-line sequence;
//! - every store and bulk write (`memory.fill`, `memory.copy`,
//!   `memory.init`) marks, before it runs, every chunk it may write in the
//!   first 64 chunks: a store marks the chunk of its first byte (it may
//!   spill up to 7 bytes into the next one, which the reset copies too);
//!   marking more than is written is allowed, less never.

use std::convert::Infallible;

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{BlockType, Function, Instruction, SectionId, ValType};

use super::*;

/// The export of the dirty-chunk global the instrumentation adds.
pub(super) const DIRTY_EXPORT: &str = "ctx:dirty";

/// The export of mutable global `index`, added for the reset.
pub(super) fn global_export_name(index: u32) -> String {
    format!("{RESERVED_EXPORT_PREFIX}global:{index}")
}

/// The rewritten module: the same module plus, for the runtime, exports of
/// the mutable globals and, if `track` gives a chunk shift, an i64 global of
/// dirty chunks (exported as [`DIRTY_EXPORT`]) that every memory write
/// updates (see the module doc).
pub(super) fn rewrite(
    wasm: &[u8],
    analysis: &Analysis,
    track: Option<u32>,
) -> Result<Vec<u8>, AppError> {
    let mut rewrite = Rewrite {
        analysis,
        track: track.map(|chunk_shift| Track {
            chunk_shift,
            globals: Scratch::after(analysis.globals_len),
        }),
        globals_added: false,
    };
    let mut module = wasm_encoder::Module::new();
    rewrite
        .parse_core_module(&mut module, Parser::new(0), wasm)
        .map_err(|e| AppError::Invalid(format!("cannot rewrite the module: {e}")))?;
    assert!(
        rewrite.track.is_none() || rewrite.globals_added,
        "the instrumentation's globals were not added"
    );
    Ok(module.finish())
}

/// The reencoder: copies the module, adding what the reset needs.
struct Rewrite<'a> {
    analysis: &'a Analysis,
    track: Option<Track>,
    /// Whether the instrumentation's globals are in the output yet.
    globals_added: bool,
}

/// Dirty tracking: the chunk size and the globals the code uses.
struct Track {
    chunk_shift: u32,
    globals: Scratch,
}

/// The globals the instrumentation adds, after the module's own.
struct Scratch {
    /// The dirty-chunk bit set (exported as [`DIRTY_EXPORT`]).
    dirty: u32,
    /// A store's or bulk operation's destination address.
    addr: u32,
    /// A store's value, by type; a bulk operation's middle operand (i32).
    i32: u32,
    i64: u32,
    f32: u32,
    f64: u32,
    /// A bulk operation's length.
    len: u32,
    /// An intermediate chunk index.
    tmp: u32,
}

impl Scratch {
    /// The globals in the order they are declared, with their types.
    fn after(first: u32) -> Scratch {
        Scratch {
            dirty: first,
            addr: first + 1,
            i32: first + 2,
            i64: first + 3,
            f32: first + 4,
            f64: first + 5,
            len: first + 6,
            tmp: first + 7,
        }
    }

    /// Appends the globals to `globals`, which holds the module's own.
    fn declare(&self, globals: &mut wasm_encoder::GlobalSection) {
        let declared = [
            (self.dirty, ValType::I64),
            (self.addr, ValType::I32),
            (self.i32, ValType::I32),
            (self.i64, ValType::I64),
            (self.f32, ValType::F32),
            (self.f64, ValType::F64),
            (self.len, ValType::I32),
            (self.tmp, ValType::I64),
        ];
        for (index, val_type) in declared {
            assert_eq!(index, globals.len(), "scratch globals out of order");
            let zero = match val_type {
                ValType::I32 => wasm_encoder::ConstExpr::i32_const(0),
                ValType::I64 => wasm_encoder::ConstExpr::i64_const(0),
                ValType::F32 => wasm_encoder::ConstExpr::f32_const(0.0),
                _ => wasm_encoder::ConstExpr::f64_const(0.0),
            };
            let ty = wasm_encoder::GlobalType {
                val_type,
                mutable: true,
                shared: false,
            };
            globals.global(ty, &zero);
        }
    }
}

impl Rewrite<'_> {
    fn add_globals(&mut self, globals: &mut wasm_encoder::GlobalSection) {
        if let Some(track) = &self.track {
            assert_eq!(globals.len(), self.analysis.globals_len);
            track.globals.declare(globals);
            self.globals_added = true;
        }
    }
}

impl Reencode for Rewrite<'_> {
    type Error = Infallible;

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.add_globals(globals);
        Ok(())
    }

    /// A module without a global section gets one, just before its export
    /// section (which every app has: it exports its memory).
    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), reencode::Error<Infallible>> {
        if before == Some(SectionId::Export) && self.track.is_some() && !self.globals_added {
            let mut globals = wasm_encoder::GlobalSection::new();
            self.add_globals(&mut globals);
            module.section(&globals);
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        for &index in &self.analysis.mutable_globals {
            exports.export(
                &global_export_name(index),
                wasm_encoder::ExportKind::Global,
                index,
            );
        }
        if let Some(track) = &self.track {
            exports.export(
                DIRTY_EXPORT,
                wasm_encoder::ExportKind::Global,
                track.globals.dirty,
            );
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        let mut function = self.new_function_with_parsed_locals(&func)?;
        let mut operators = func.get_operators_reader()?;
        while !operators.eof() {
            let operator = operators.read()?;
            if let Some(track) = &self.track {
                track.mark_before(&operator, &mut function);
            }
            function.instruction(&self.instruction(operator)?);
        }
        code.function(&function);
        Ok(())
    }

    /// Custom sections are copied as they are: they do not run, and a
    /// malformed one (which validation allows) must not fail the rewrite.
    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        module.section(&wasm_encoder::CustomSection {
            name: section.name().into(),
            data: section.data().into(),
        });
        Ok(())
    }
}

impl Track {
    /// Emits, before `operator`, the marking of what it writes, if it
    /// writes memory.
    fn mark_before(&self, operator: &Operator<'_>, out: &mut Function) {
        let store = |value: u32, memarg: &wasmparser::MemArg| (value, memarg.offset);
        let g = &self.globals;
        let write = match operator {
            Operator::I32Store { memarg }
            | Operator::I32Store8 { memarg }
            | Operator::I32Store16 { memarg } => Some(store(g.i32, memarg)),
            Operator::I64Store { memarg }
            | Operator::I64Store8 { memarg }
            | Operator::I64Store16 { memarg }
            | Operator::I64Store32 { memarg } => Some(store(g.i64, memarg)),
            Operator::F32Store { memarg } => Some(store(g.f32, memarg)),
            Operator::F64Store { memarg } => Some(store(g.f64, memarg)),
            Operator::MemoryFill { .. }
            | Operator::MemoryCopy { .. }
            | Operator::MemoryInit { .. } => {
                self.mark_bulk(out);
                None
            }
            _ => None,
        };
        if let Some((value, offset)) = write {
            self.mark_store(out, value, offset);
        }
    }

    /// Before a store with `[address, value]` on the stack: marks the chunk
    /// of `address + offset`, leaving the stack as it was. With `d` the
    /// depth at the store, the sequence never goes deeper than `d`:
    ///
    /// ```text
    /// global.set $value  global.set $addr                        ;; d-2
    /// global.get $addr  i64.extend_i32_u  [i64.const offset  i64.add]
    /// i64.const shift  i64.shr_u  global.set $tmp                ;; <= d
    /// i64.const 1  global.get $tmp  i64.shl                      ;; <= d
    /// global.get $dirty  i64.or  global.set $dirty               ;; <= d
    /// global.get $addr  global.get $value                        ;; d
    /// ```
    ///
    /// A chunk index of 64 or more wraps around in `i64.shl`, marking a
    /// wrong chunk: such a store is beyond the initial memory (which then
    /// grew, so the instance is not reused) or out of bounds (it traps).
    fn mark_store(&self, out: &mut Function, value: u32, offset: u64) {
        let g = &self.globals;
        out.instruction(&Instruction::GlobalSet(value));
        out.instruction(&Instruction::GlobalSet(g.addr));
        out.instruction(&Instruction::GlobalGet(g.addr));
        out.instruction(&Instruction::I64ExtendI32U);
        if offset != 0 {
            // A memarg offset of a 32-bit memory fits in 32 bits.
            out.instruction(&Instruction::I64Const(
                i64::try_from(offset).unwrap_or(i64::MAX),
            ));
            out.instruction(&Instruction::I64Add);
        }
        out.instruction(&Instruction::I64Const(i64::from(self.chunk_shift)));
        out.instruction(&Instruction::I64ShrU);
        out.instruction(&Instruction::GlobalSet(g.tmp));
        out.instruction(&Instruction::I64Const(1));
        out.instruction(&Instruction::GlobalGet(g.tmp));
        out.instruction(&Instruction::I64Shl);
        self.or_into_dirty(out);
        out.instruction(&Instruction::GlobalGet(g.addr));
        out.instruction(&Instruction::GlobalGet(value));
    }

    /// Before `memory.fill`/`copy`/`init` with `[dst, x, len]` on the stack:
    /// marks every chunk of `[dst, dst + len)`, as `chunk_mask` does,
    /// leaving the stack as it was and never deeper than it was (`d`):
    ///
    /// ```text
    /// global.set $len  global.set $x  global.set $addr            ;; d-3
    /// (if (global.get $len) (then
    ///   ;; $tmp = min((dst + len - 1) >> shift, 63)
    ///   (global.set $tmp (i64.shr_u (i64.sub (i64.add (i64.extend_i32_u $addr)
    ///                                                 (i64.extend_i32_u $len))
    ///                                        (i64.const 1))
    ///                               (i64.const shift)))               ;; <= d-1
    ///   (if (i64.gt_u (global.get $tmp) (i64.const 63))
    ///     (then (global.set $tmp (i64.const 63))))
    ///   (global.set $tmp (i64.sub (i64.const 63) (global.get $tmp)))
    ///   ;; $dirty |= (-1 << first) & (-1 >>> (63 - last))
    ///   (i64.shl (i64.const -1) (i64.shr_u (i64.extend_i32_u $addr) (i64.const shift)))
    ///   (i64.shr_u (i64.const -1) (global.get $tmp))  i64.and          ;; <= d
    ///   global.get $dirty  i64.or  global.set $dirty))
    /// global.get $addr  global.get $x  global.get $len                ;; d
    /// ```
    ///
    /// A first chunk of 64 or more wraps around in `i64.shl` and marks
    /// chunks that are not written, which costs a copy but is never wrong.
    fn mark_bulk(&self, out: &mut Function) {
        let g = &self.globals;
        let shift = i64::from(self.chunk_shift);
        out.instruction(&Instruction::GlobalSet(g.len));
        out.instruction(&Instruction::GlobalSet(g.i32));
        out.instruction(&Instruction::GlobalSet(g.addr));
        out.instruction(&Instruction::GlobalGet(g.len));
        out.instruction(&Instruction::If(BlockType::Empty));
        {
            out.instruction(&Instruction::GlobalGet(g.addr));
            out.instruction(&Instruction::I64ExtendI32U);
            out.instruction(&Instruction::GlobalGet(g.len));
            out.instruction(&Instruction::I64ExtendI32U);
            out.instruction(&Instruction::I64Add);
            out.instruction(&Instruction::I64Const(1));
            out.instruction(&Instruction::I64Sub);
            out.instruction(&Instruction::I64Const(shift));
            out.instruction(&Instruction::I64ShrU);
            out.instruction(&Instruction::GlobalSet(g.tmp));
            out.instruction(&Instruction::GlobalGet(g.tmp));
            out.instruction(&Instruction::I64Const(63));
            out.instruction(&Instruction::I64GtU);
            out.instruction(&Instruction::If(BlockType::Empty));
            out.instruction(&Instruction::I64Const(63));
            out.instruction(&Instruction::GlobalSet(g.tmp));
            out.instruction(&Instruction::End);
            out.instruction(&Instruction::I64Const(63));
            out.instruction(&Instruction::GlobalGet(g.tmp));
            out.instruction(&Instruction::I64Sub);
            out.instruction(&Instruction::GlobalSet(g.tmp));
            out.instruction(&Instruction::I64Const(-1));
            out.instruction(&Instruction::GlobalGet(g.addr));
            out.instruction(&Instruction::I64ExtendI32U);
            out.instruction(&Instruction::I64Const(shift));
            out.instruction(&Instruction::I64ShrU);
            out.instruction(&Instruction::I64Shl);
            out.instruction(&Instruction::I64Const(-1));
            out.instruction(&Instruction::GlobalGet(g.tmp));
            out.instruction(&Instruction::I64ShrU);
            out.instruction(&Instruction::I64And);
            self.or_into_dirty(out);
        }
        out.instruction(&Instruction::End);
        out.instruction(&Instruction::GlobalGet(g.addr));
        out.instruction(&Instruction::GlobalGet(g.i32));
        out.instruction(&Instruction::GlobalGet(g.len));
    }

    /// `[mask]` → `[]`: ors the mask into the dirty global (one operand
    /// deeper than the mask, at most).
    fn or_into_dirty(&self, out: &mut Function) {
        let dirty = self.globals.dirty;
        out.instruction(&Instruction::GlobalGet(dirty));
        out.instruction(&Instruction::I64Or);
        out.instruction(&Instruction::GlobalSet(dirty));
    }
}
