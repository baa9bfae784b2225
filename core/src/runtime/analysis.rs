//! What the runtime learns about a valid module before compiling it: the
//! ABI checks (imports, exports, no start function) and, per function body,
//! where it writes memory and whether it can change instance state.
//!
//! Owns: a module the analysis accepts meets the ABI of `docs/ABI.md`; the
//! choice of reset derived from it depends on the module's bytes only, so
//! every member makes the same one.

use super::*;

/// What the runtime learns about a valid module, in one pass over it.
pub(super) struct Analysis {
    /// Indices of the mutable globals (there are no imported globals).
    pub(super) mutable_globals: Vec<u32>,
    /// Number of globals: the index of the dirty-chunk global it adds.
    pub(super) globals_len: u32,
    /// Number of types: the index of the helper's type it adds.
    pub(super) types_len: u32,
    /// Parameter count of each type (0 for a type that is not a function).
    pub(super) type_params: Vec<u32>,
    /// Type index of each defined function.
    pub(super) func_types: Vec<u32>,
    /// Number of imported functions (all imports are functions).
    pub(super) imported_funcs: u32,
    /// Initial size of the memory in bytes.
    pub(super) memory_bytes: u64,
    /// The code contains an instruction that changes instance state other
    /// than the memory and the globals: `table.set`, `table.grow`,
    /// `table.fill`, `table.copy`, `table.init`, `elem.drop`, `data.drop`.
    pub(super) mutates_instance: bool,
    /// The code contains an instruction the store instrumentation does not
    /// know (a SIMD or atomic one): its memory writes cannot be tracked.
    pub(super) untrackable: bool,
    /// The function bodies and where they write to memory.
    pub(super) bodies: Vec<Body>,
}

/// A function body and its memory writes.
pub(super) struct Body {
    /// The body (locals and code) in the module.
    pub(super) range: Range<usize>,
    /// Where the code starts, after the locals.
    pub(super) code_start: usize,
    /// Number of local groups, and of locals.
    pub(super) local_groups: u32,
    pub(super) locals: u64,
    /// The instructions that write memory, in order.
    pub(super) writes: Vec<Write>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Write {
    /// A store instruction at this offset: its value type and static offset.
    Store {
        at: usize,
        value: StoreValue,
        offset: u64,
    },
    /// `memory.fill`, `memory.copy` or `memory.init` at this offset.
    Bulk { at: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoreValue {
    I32,
    I64,
    F32,
    F64,
}

/// Checks the ABI of a module that passed validation and collects what the
/// runtime needs.
pub(super) fn analyze(wasm: &[u8]) -> Result<Analysis, AppError> {
    let invalid = |e: wasmparser::BinaryReaderError| AppError::Invalid(e.to_string());
    let mut analysis = Analysis {
        mutable_globals: Vec::new(),
        globals_len: 0,
        types_len: 0,
        type_params: Vec::new(),
        func_types: Vec::new(),
        imported_funcs: 0,
        memory_bytes: 0,
        mutates_instance: false,
        untrackable: false,
        bodies: Vec::new(),
    };
    let mut memory_exported = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for ty in group.map_err(invalid)?.types() {
                        let params = match &ty.composite_type.inner {
                            CompositeInnerType::Func(func) => func.params().len(),
                            _ => 0,
                        };
                        analysis
                            .type_params
                            .push(u32::try_from(params).unwrap_or(u32::MAX));
                    }
                }
                analysis.types_len = u32::try_from(analysis.type_params.len())
                    .map_err(|_| AppError::Invalid("too many types".to_owned()))?;
            }
            Payload::ImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(invalid)?;
                    let known = import.module == "env" && HOST_FUNCTIONS.contains(&import.name);
                    if !known || !matches!(import.ty, TypeRef::Func(_)) {
                        return Err(AppError::UnsupportedImport {
                            module: import.module.to_owned(),
                            name: import.name.to_owned(),
                        });
                    }
                    analysis.imported_funcs += 1;
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    analysis.func_types.push(ty.map_err(invalid)?);
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    analysis.memory_bytes = memory.initial.saturating_mul(WASM_PAGE_BYTES);
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    if global.map_err(invalid)?.ty.mutable {
                        analysis.mutable_globals.push(analysis.globals_len);
                    }
                    analysis.globals_len += 1;
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.name.starts_with(RESERVED_EXPORT_PREFIX) {
                        return Err(AppError::ReservedExport(export.name.to_owned()));
                    }
                    if export.name == "memory" && export.kind == ExternalKind::Memory {
                        memory_exported = true;
                    }
                }
            }
            Payload::StartSection { .. } => return Err(AppError::StartFunction),
            Payload::CodeSectionEntry(body) => {
                let body = analyze_body(wasm, &body, &mut analysis).map_err(invalid)?;
                analysis.bodies.push(body);
            }
            _ => {}
        }
    }
    if !memory_exported {
        return Err(AppError::MissingMemoryExport);
    }
    Ok(analysis)
}

/// Finds a body's memory writes and any instruction that rules out the
/// restore-in-place reset or the store instrumentation.
pub(super) fn analyze_body(
    wasm: &[u8],
    body: &wasmparser::FunctionBody<'_>,
    analysis: &mut Analysis,
) -> Result<Body, wasmparser::BinaryReaderError> {
    let mut locals_reader = body.get_locals_reader()?;
    let local_groups = locals_reader.get_count();
    let mut locals: u64 = 0;
    for _ in 0..local_groups {
        locals += u64::from(locals_reader.read()?.0);
    }
    let mut operators = body.get_operators_reader()?;
    let code_start = operators.original_position();
    let mut writes = Vec::new();
    while !operators.eof() {
        let (operator, at) = operators.read_with_offset()?;
        let store = |value, memarg: wasmparser::MemArg| Write::Store {
            at,
            value,
            offset: memarg.offset,
        };
        let write = match operator {
            Operator::I32Store { memarg }
            | Operator::I32Store8 { memarg }
            | Operator::I32Store16 { memarg } => Some(store(StoreValue::I32, memarg)),
            Operator::I64Store { memarg }
            | Operator::I64Store8 { memarg }
            | Operator::I64Store16 { memarg }
            | Operator::I64Store32 { memarg } => Some(store(StoreValue::I64, memarg)),
            Operator::F32Store { memarg } => Some(store(StoreValue::F32, memarg)),
            Operator::F64Store { memarg } => Some(store(StoreValue::F64, memarg)),
            Operator::MemoryFill { .. }
            | Operator::MemoryCopy { .. }
            | Operator::MemoryInit { .. } => Some(Write::Bulk { at }),
            Operator::TableSet { .. }
            | Operator::TableGrow { .. }
            | Operator::TableFill { .. }
            | Operator::TableCopy { .. }
            | Operator::TableInit { .. }
            | Operator::ElemDrop { .. }
            | Operator::DataDrop { .. } => {
                analysis.mutates_instance = true;
                None
            }
            _ => {
                // The SIMD (0xfd) and atomic (0xfe) prefixes hold stores
                // this instrumentation does not handle.
                if matches!(wasm.get(at), Some(0xfd | 0xfe)) {
                    analysis.untrackable = true;
                }
                None
            }
        };
        writes.extend(write);
    }
    Ok(Body {
        range: body.range(),
        code_start,
        local_groups,
        locals,
        writes,
    })
}
// ---------------------------------------------------------------------------
// Binary layout: sections and LEB128.

pub(super) const WASM_PAGE_BYTES: u64 = 64 * 1024;
