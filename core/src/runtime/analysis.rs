//! What the runtime learns about a valid module before compiling it: the
//! ABI checks (imports, exports, no start function) and what its code can
//! change besides the memory and the globals.
//!
//! Owns: a module the analysis accepts meets the ABI of `docs/ABI.md`; the
//! choice of reset derived from it depends on the module's bytes only, so
//! every member makes the same one.

use super::*;

/// The size of a WebAssembly page.
pub(super) const WASM_PAGE_BYTES: u64 = 64 * 1024;

/// What the runtime learns about a valid module, in one pass over it.
pub(super) struct Analysis {
    /// Indices of the mutable globals (there are no imported globals).
    pub(super) mutable_globals: Vec<u32>,
    /// Number of globals: the index of the first global the rewrite adds.
    pub(super) globals_len: u32,
    /// Initial size of the memory in bytes.
    pub(super) memory_bytes: u64,
    /// The code contains an instruction that changes instance state other
    /// than the memory and the globals: `table.set`, `table.grow`,
    /// `table.fill`, `table.copy`, `table.init`, `elem.drop`, `data.drop`.
    pub(super) mutates_instance: bool,
    /// The code contains an instruction the store instrumentation does not
    /// know (a SIMD or atomic one, which this engine's validation refuses
    /// today): its memory writes cannot be tracked.
    pub(super) untrackable: bool,
}

/// Checks the ABI of a module that passed validation and collects what the
/// runtime needs.
pub(super) fn analyze(wasm: &[u8]) -> Result<Analysis, AppError> {
    let invalid = |e: wasmparser::BinaryReaderError| AppError::Invalid(e.to_string());
    let mut analysis = Analysis {
        mutable_globals: Vec::new(),
        globals_len: 0,
        memory_bytes: 0,
        mutates_instance: false,
        untrackable: false,
    };
    let mut memory_exported = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
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
                analyze_body(wasm, &body, &mut analysis).map_err(invalid)?;
            }
            _ => {}
        }
    }
    if !memory_exported {
        return Err(AppError::MissingMemoryExport);
    }
    Ok(analysis)
}

/// Notes any instruction of a body that rules out the restore-in-place
/// reset or the store instrumentation.
fn analyze_body(
    wasm: &[u8],
    body: &wasmparser::FunctionBody<'_>,
    analysis: &mut Analysis,
) -> Result<(), wasmparser::BinaryReaderError> {
    let mut operators = body.get_operators_reader()?;
    while !operators.eof() {
        let (operator, at) = operators.read_with_offset()?;
        match operator {
            Operator::TableSet { .. }
            | Operator::TableGrow { .. }
            | Operator::TableFill { .. }
            | Operator::TableCopy { .. }
            | Operator::TableInit { .. }
            | Operator::ElemDrop { .. }
            | Operator::DataDrop { .. } => analysis.mutates_instance = true,
            // The SIMD (0xfd) and atomic (0xfe) prefixes hold stores the
            // instrumentation does not handle.
            _ if matches!(wasm.get(at), Some(0xfd | 0xfe)) => analysis.untrackable = true,
            _ => {}
        }
    }
    Ok(())
}
