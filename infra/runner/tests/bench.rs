//! The benchmark keeps working: every workload runs once at a tiny size, and what it reports
//! about correctness (order, completeness, nothing acknowledged lost) holds. No figure of speed
//! is checked here; those belong to docs/BENCHMARKS.md.

use serde_json::Value;

#[test]
fn every_workload_runs_at_a_tiny_size_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_livesync-bench"))
        .args(["--tiny", "--json"])
        .arg(&json)
        .status()
        .unwrap();
    assert!(status.success());
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let w = &report["workloads"];
    let names: Vec<&str> = w.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    for variant in w["ack"].as_array().unwrap() {
        assert_eq!(variant["ack"]["samples"], variant["publishes"], "{variant}");
    }
    for room in w["contended"].as_array().unwrap() {
        assert_eq!(room["subscribers_in_order"], room["subscribers"], "{room}");
    }
    assert_eq!(w["pipelined"]["acked"], w["pipelined"]["publishes"], "no publish fails for contention");
    let rooms = &w["rooms"];
    assert_eq!(
        rooms["subscribers_in_order"].as_u64(),
        Some(rooms["rooms"].as_u64().unwrap() * rooms["subscribers_per_room"].as_u64().unwrap())
    );
    assert_eq!(w["fanout"]["subscribers_in_order"], w["fanout"]["subscribers"]);
    assert!(w["idle"]["resident_mib"].as_f64().unwrap() > 0.0, "the server's memory is read");
    assert_eq!(w["burst"]["acked_not_stored"], 0, "nothing acknowledged is lost");
    assert_eq!(w["burst"]["subscribers_in_order"], w["burst"]["subscribers"]);
    assert_eq!(w["state"]["final_count"], w["state"]["writes"], "every acknowledged increment counted once");
    assert_eq!(report["machine"]["cpus"].as_u64().map(|n| n > 0), Some(true));
}
