//! A real kube-apiserver with kube-sim as its kubelet and custody (recording) in front of it,
//! shared by the real-cluster streaming and client tests (see `docs/real-cluster.md`). The
//! including test file declares `mod env;` (`gateway_support/env.rs`).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::panic,
    reason = "each test file uses a different part; setup failures should fail the test"
)]

use std::time::{Duration, Instant};

use custody::upstream::Upstream;
use custody_fixtures::kube_sim::kubelet::Kubelet;
use custody_fixtures::real_cluster::RealCluster;
use custody_recorder::model::SessionKind;
use custody_recorder::reader::{Recording, read_recording};
use serde_json::json;

use crate::env::{Env, Options};

/// A real cluster with kube-sim as its kubelet, custody (recording) in front of it, and alice
/// allowed to read pods and stream to them.
pub struct Stack {
    pub kubelet: Option<Kubelet>,
    pub env: Env,
    pub cluster: RealCluster,
}

impl Stack {
    pub fn start() -> Stack {
        let started = Instant::now();
        let cluster = RealCluster::start().unwrap_or_else(|e| {
            panic!("the real-cluster tier could not start a kube-apiserver: {e}")
        });
        cluster
            .create(
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                &json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": "pod-streamer"},
                    "rules": [
                        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
                        {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward"], "verbs": ["get", "create"]}
                    ]
                }),
            )
            .unwrap();
        cluster
            .bind_cluster_role(
                "alice-streams",
                "pod-streamer",
                "alice",
                ("create", "pods/exec"),
            )
            .unwrap();
        let upstream = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(Upstream::from_kubeconfig(
                cluster.custody_kubeconfig(),
                None,
            ))
            .unwrap();
        let env = Env::start(Options {
            upstream: Some(upstream),
            recording: true,
            ..Options::default()
        });
        let kubelet = env
            .rt
            .block_on(Kubelet::start(&cluster))
            .unwrap_or_else(|e| {
                panic!(
                    "kube-sim could not serve as the kubelet: {e}\n--- kube-apiserver ---\n{}",
                    cluster.apiserver_log_tail()
                )
            });
        eprintln!(
            "real cluster {} with kube-sim's kubelet at {} ready in {:.1} s",
            cluster.version(),
            kubelet.addr(),
            started.elapsed().as_secs_f64()
        );
        Stack {
            kubelet: Some(kubelet),
            env,
            cluster,
        }
    }

    /// Every recording once `count` exist and all are sealed, verified, oldest first.
    pub fn sealed_recordings(&self, count: usize) -> Vec<Recording> {
        let key = self.env.signing_key.as_ref().unwrap().verifying_key();
        let dir = self.env.data_dir.join("recordings");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut recordings = Vec::new();
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries {
                    if let Ok(recording) = read_recording(&entry.unwrap().path(), Some(&key)) {
                        recordings.push(recording);
                    }
                }
            }
            let sealed = recordings.iter().filter(|r| r.manifest.is_some()).count();
            if sealed >= count && recordings.len() == sealed {
                recordings.sort_by_key(|r| r.meta.started_at_us);
                return recordings;
            }
            assert!(
                Instant::now() < deadline,
                "{} recordings, {sealed} sealed, wanted {count}",
                recordings.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            self.env.rt.block_on(kubelet.shutdown());
        }
    }
}

pub fn check_identity(recording: &Recording, kind: SessionKind, pod: &str) {
    assert!(recording.damage.is_none(), "{:?}", recording.damage);
    assert_eq!(recording.meta.kind, kind);
    assert_eq!(recording.meta.initiator.username, "alice");
    assert_eq!(recording.meta.effective.user, "alice");
    assert_eq!(recording.meta.cluster, "sim");
    assert_eq!(recording.meta.namespace, "default");
    assert_eq!(recording.meta.pod, pod);
}
