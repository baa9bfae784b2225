//! Byzantine members end to end: each bundled `byzantine-*` scenario runs
//! its liar's behaviours (the notes count them), every check holds, and
//! the trace replays to the same hash, the tampered messages included (a
//! trace records what each node received, as it received it).

use std::path::{Path, PathBuf};

use ctx_sim::byzantine::Behaviour;
use ctx_sim::run::{RunOptions, run};
use ctx_sim::scenario::Scenario;
use ctx_sim::trace::replay;

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("byzantine-") && name.ends_with(".toml"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_behaviour_has_a_scenario_of_its_own() {
    let names: Vec<String> = scenarios()
        .iter()
        .map(|path| path.file_stem().unwrap().to_str().unwrap().to_owned())
        .collect();
    for behaviour in Behaviour::ALL {
        let name = format!("byzantine-{}", behaviour.name());
        assert!(names.contains(&name), "no scenario {name}.toml");
    }
    assert!(names.contains(&"byzantine-member".to_owned()));
}

#[test]
fn honest_members_converge_whatever_the_liar_sends() {
    for path in scenarios() {
        let scenario = Scenario::from_file(&path).unwrap();
        assert!(scenario.byzantine.any(), "{}", path.display());
        let file = std::env::temp_dir().join(format!(
            "ctx-byzantine-{}-{}.trace",
            scenario.name,
            std::process::id()
        ));
        let options = RunOptions {
            trace: Some(file.clone()),
            ..RunOptions::default()
        };
        let report = run(&scenario, &options).unwrap();
        assert!(report.passed, "{}: {report:#?}", path.display());
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.name == "authentic" && c.passed),
            "{}",
            path.display()
        );
        // The note counts each behaviour it used: every one listed, no other.
        let note = report
            .notes
            .iter()
            .find(|note| note.contains("(byzantine) tampered with"))
            .unwrap_or_else(|| panic!("{}: no mischief noted: {:?}", path.display(), report.notes));
        for behaviour in Behaviour::ALL {
            let listed = scenario.byzantine.behaviours.contains(&behaviour);
            let used = note.contains(&format!("{} ", behaviour.name()));
            assert_eq!(listed, used, "{}: {behaviour:?} in {note}", path.display());
        }
        let replayed = replay(&file).unwrap();
        assert_eq!(replayed.trace_hash, report.trace_hash, "{}", path.display());
        std::fs::remove_file(&file).ok();
    }
}
