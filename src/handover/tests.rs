//! The hand-over's final counters.

use super::*;

#[test]
fn the_final_counters_carry_what_the_kernel_consumed_as_received() {
    let worker = |received, bytes| WorkerSnapshot {
        received,
        bytes,
        ..WorkerSnapshot::default()
    };
    let summary = Snapshot {
        workers: vec![worker(10, 100), worker(5, 50)],
        targets: vec![TargetSnapshot::default()],
        target_names: vec!["k".into()],
        kernel: Some(crate::metrics::kernel::KernelSnapshot {
            consumed: 7,
            consumed_bytes: 70,
            ..Default::default()
        }),
        listeners: Vec::new(),
    };
    let f = Final::of(&summary);
    let received: u64 = f.workers.iter().map(|w| w.received).sum();
    let bytes: u64 = f.workers.iter().map(|w| w.bytes).sum();
    assert_eq!(
        (received, bytes),
        (summary.received(), summary.received_bytes())
    );
    assert_eq!((received, bytes), (22, 220));
    assert_eq!(f.targets.len(), 1);
    assert_eq!(f.targets[0].0, "k");
}
