use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;

/// The relay's two connections, and the far ends the test drives.
struct Ends {
    client: DuplexStream,
    upstream: DuplexStream,
    relay_client: DuplexStream,
    relay_upstream: DuplexStream,
}

fn ends(capacity: usize) -> Ends {
    let (client, relay_client) = duplex(capacity);
    let (upstream, relay_upstream) = duplex(capacity);
    Ends {
        client,
        upstream,
        relay_client,
        relay_upstream,
    }
}

/// Chunks seen, in order.
type Chunks = Arc<Mutex<Vec<(Direction, Vec<u8>)>>>;

/// Records every chunk; refuses chunks containing `refuse`.
#[derive(Clone, Default)]
struct Recorder {
    chunks: Chunks,
    refuse: Option<&'static [u8]>,
}

impl Observer for Recorder {
    fn on_chunk(
        &mut self,
        direction: Direction,
        bytes: &[u8],
        _: std::time::Instant,
    ) -> impl Future<Output = Result<(), ObserverError>> + Send {
        if let Some(bad) = self.refuse
            && bytes.windows(bad.len()).any(|w| w == bad)
        {
            return std::future::ready(Err(ObserverError("cannot record".into())));
        }
        self.chunks
            .lock()
            .unwrap()
            .push((direction, bytes.to_vec()));
        std::future::ready(Ok(()))
    }
}

impl Recorder {
    fn seen(&self, direction: Direction) -> Vec<u8> {
        let chunks = self.chunks.lock().unwrap();
        chunks
            .iter()
            .filter(|(d, _)| *d == direction)
            .flat_map(|(_, b)| b.clone())
            .collect()
    }
}

#[tokio::test]
async fn leftover_first_then_both_ways_with_half_close() {
    let Ends {
        mut client,
        mut upstream,
        relay_client,
        relay_upstream,
    } = ends(1024);
    let recorder = Recorder::default();
    let cancel = CancelHandle::new();
    let task = {
        let recorder = recorder.clone();
        tokio::spawn(async move {
            relay(
                relay_client,
                relay_upstream,
                Bytes::from_static(b"early"),
                recorder,
                RelayConfig::default(),
                &cancel,
            )
            .await
        })
    };
    let mut early = [0u8; 5];
    client.read_exact(&mut early).await.unwrap();
    assert_eq!(&early, b"early");

    // The client sends and half-closes; the upstream sees the bytes then EOF.
    client.write_all(b"input").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    upstream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"input");

    // The other direction still flows after the half-close.
    upstream.write_all(b"output after eof").await.unwrap();
    upstream.shutdown().await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"output after eof");

    let report = task.await.unwrap();
    assert!(matches!(report.end, RelayEnd::ClientClosed), "{report:?}");
    assert_eq!(report.client_to_upstream, 5);
    assert_eq!(report.upstream_to_client, 5 + 16);
    assert_eq!(recorder.seen(Direction::ClientToServer), b"input");
    assert_eq!(
        recorder.seen(Direction::ServerToClient),
        b"earlyoutput after eof"
    );
}

#[tokio::test]
async fn upstream_closing_first_is_reported() {
    let Ends {
        mut client,
        mut upstream,
        relay_client,
        relay_upstream,
    } = ends(1024);
    let cancel = CancelHandle::new();
    let task = tokio::spawn(async move {
        relay(
            relay_client,
            relay_upstream,
            Bytes::new(),
            (),
            RelayConfig::default(),
            &cancel,
        )
        .await
    });
    upstream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    client.shutdown().await.unwrap();
    let report = task.await.unwrap();
    assert!(matches!(report.end, RelayEnd::UpstreamClosed), "{report:?}");
}

#[tokio::test]
async fn cancellation_ends_an_idle_session_within_a_second() {
    let Ends {
        client: _client,
        upstream: _upstream,
        relay_client,
        relay_upstream,
    } = ends(1024);
    let cancel = CancelHandle::new();
    let handle = cancel.clone();
    let task = tokio::spawn(async move {
        relay(
            relay_client,
            relay_upstream,
            Bytes::new(),
            (),
            RelayConfig::default(),
            &cancel,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let asked = Instant::now();
    handle.cancel("ended by an admin");
    handle.cancel("a later reason is ignored");
    let report = tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the relay ends within a second")
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(&report.end, RelayEnd::Cancelled(r) if r == "ended by an admin"),
        "{report:?}"
    );
}

#[tokio::test]
async fn cancellation_ends_a_session_blocked_on_a_slow_reader() {
    let Ends {
        mut client,
        upstream: _upstream,
        relay_client,
        relay_upstream,
    } = ends(16);
    let cancel = CancelHandle::new();
    let handle = cancel.clone();
    let task = tokio::spawn(async move {
        relay(
            relay_client,
            relay_upstream,
            Bytes::new(),
            (),
            RelayConfig::default(),
            &cancel,
        )
        .await
    });
    // The upstream never reads: the relay is stuck writing.
    let _ = tokio::time::timeout(Duration::from_millis(100), client.write_all(&[7; 4096])).await;
    handle.cancel("recording failed");
    let report = tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the relay ends within a second")
        .unwrap();
    assert!(matches!(report.end, RelayEnd::Cancelled(_)), "{report:?}");
}

#[tokio::test]
async fn idle_timeout_and_max_duration() {
    let Ends {
        mut client,
        mut upstream,
        relay_client,
        relay_upstream,
    } = ends(1024);
    let cancel = CancelHandle::new();
    let config = RelayConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..RelayConfig::default()
    };
    let started = Instant::now();
    let task = tokio::spawn(async move {
        relay(
            relay_client,
            relay_upstream,
            Bytes::new(),
            (),
            config,
            &cancel,
        )
        .await
    });
    // Activity every 100 ms keeps the session alive past the idle timeout.
    for _ in 0..6 {
        client.write_all(b"k").await.unwrap();
        let mut b = [0u8; 1];
        upstream.read_exact(&mut b).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = task.await.unwrap();
    assert!(matches!(report.end, RelayEnd::IdleTimeout), "{report:?}");
    assert!(started.elapsed() >= Duration::from_millis(800));

    let Ends {
        client: _client,
        upstream: _upstream,
        relay_client,
        relay_upstream,
    } = ends(1024);
    let cancel = CancelHandle::new();
    let config = RelayConfig {
        max_duration: Some(Duration::from_millis(200)),
        ..RelayConfig::default()
    };
    let report = relay(
        relay_client,
        relay_upstream,
        Bytes::new(),
        (),
        config,
        &cancel,
    )
    .await;
    assert!(matches!(report.end, RelayEnd::MaxDuration), "{report:?}");
}

#[tokio::test]
async fn an_observer_error_stops_the_session_before_the_chunk_is_forwarded() {
    let Ends {
        mut client,
        mut upstream,
        relay_client,
        relay_upstream,
    } = ends(1024);
    let recorder = Recorder {
        refuse: Some(b"UNRECORDABLE"),
        ..Recorder::default()
    };
    let cancel = CancelHandle::new();
    let task = tokio::spawn(async move {
        relay(
            relay_client,
            relay_upstream,
            Bytes::new(),
            recorder,
            RelayConfig::default(),
            &cancel,
        )
        .await
    });
    client.write_all(b"fine").await.unwrap();
    let mut b = [0u8; 4];
    upstream.read_exact(&mut b).await.unwrap();
    client.write_all(b"UNRECORDABLE").await.unwrap();
    let report = task.await.unwrap();
    assert!(
        matches!(report.end, RelayEnd::Observer(Direction::ClientToServer, _)),
        "{report:?}"
    );
    assert_eq!(report.client_to_upstream, 4);
    // The refused chunk never reached the upstream; its connection is closed.
    let mut rest = Vec::new();
    upstream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn memory_is_bounded_with_a_fast_producer_and_a_slow_consumer() {
    const CAPACITY: usize = 8 * 1024;
    const BUFFER: usize = 16 * 1024;
    let Ends {
        mut client,
        mut upstream,
        relay_client,
        relay_upstream,
    } = ends(CAPACITY);
    let cancel = CancelHandle::new();
    let config = RelayConfig {
        buffer_size: BUFFER,
        ..RelayConfig::default()
    };
    let task = tokio::spawn(async move {
        relay(
            relay_client,
            relay_upstream,
            Bytes::new(),
            (),
            config,
            &cancel,
        )
        .await
    });
    let total: usize = 4 * 1024 * 1024;
    let produced = Arc::new(AtomicUsize::new(0));
    let writer_task = {
        let produced = produced.clone();
        tokio::spawn(async move {
            let data: Vec<u8> = (0..total).map(|i| u8::try_from(i % 251).unwrap()).collect();
            for chunk in data.chunks(4096) {
                client.write_all(chunk).await.unwrap();
                produced.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            client.shutdown().await.unwrap();
            client
        })
    };
    let mut consumed = 0usize;
    let mut received = Vec::with_capacity(total);
    let mut buf = [0u8; 1024];
    while consumed < total {
        let n = upstream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        received.extend_from_slice(&buf[..n]);
        consumed += n;
        if consumed % (256 * 1024) < 1024 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // In flight: the producer's pipe, the relay's one chunk, the consumer's pipe.
            let ahead = produced.load(Ordering::SeqCst) - consumed;
            assert!(
                ahead <= CAPACITY + BUFFER + CAPACITY + 4096,
                "{ahead} bytes in flight"
            );
        }
    }
    let expected: Vec<u8> = (0..total).map(|i| u8::try_from(i % 251).unwrap()).collect();
    assert!(received == expected, "the bytes arrive intact and in order");
    let mut client = writer_task.await.unwrap();
    assert_eq!(upstream.read(&mut buf).await.unwrap(), 0);
    upstream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    let report = task.await.unwrap();
    assert!(matches!(report.end, RelayEnd::ClientClosed), "{report:?}");
    assert_eq!(report.client_to_upstream, total as u64);
}

/// Sees nothing; refuses chunks containing `REFUSED`, holds chunks containing `HOLD` forever
/// (a recorder that stalls); says `bytes` as its farewell and notes every end it was asked
/// about, with the bytes the relay says the client received.
#[derive(Clone, Default)]
struct Leaving {
    bytes: Bytes,
    asked: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Leaving {
    fn new(bytes: &'static [u8]) -> Self {
        Self {
            bytes: Bytes::from_static(bytes),
            ..Self::default()
        }
    }

    fn asked(&self) -> Vec<(String, u64)> {
        self.asked.lock().unwrap().clone()
    }
}

impl Observer for Leaving {
    fn on_chunk(
        &mut self,
        _: Direction,
        bytes: &[u8],
        _: std::time::Instant,
    ) -> impl Future<Output = Result<(), ObserverError>> + Send {
        let refused = bytes.windows(7).any(|w| w == b"REFUSED");
        let held = bytes.windows(4).any(|w| w == b"HOLD");
        async move {
            if held {
                std::future::pending::<()>().await;
            }
            if refused {
                Err(ObserverError("cannot record".into()))
            } else {
                Ok(())
            }
        }
    }

    fn farewell(&mut self, end: &RelayEnd, delivered: u64) -> Option<Bytes> {
        self.asked
            .lock()
            .unwrap()
            .push((format!("{end:?}"), delivered));
        Some(self.bytes.clone())
    }
}

/// Runs a relay with `observer` and `config` on fresh ends of `capacity`.
fn spawn_relay(
    capacity: usize,
    observer: Leaving,
    config: RelayConfig,
) -> (
    DuplexStream,
    DuplexStream,
    CancelHandle,
    tokio::task::JoinHandle<RelayReport>,
) {
    let Ends {
        client,
        upstream,
        relay_client,
        relay_upstream,
    } = ends(capacity);
    let cancel = CancelHandle::new();
    let handle = cancel.clone();
    let task = tokio::spawn(async move {
        relay(
            relay_client,
            relay_upstream,
            Bytes::new(),
            observer,
            config,
            &cancel,
        )
        .await
    });
    (client, upstream, handle, task)
}

#[tokio::test]
async fn custody_ending_the_session_says_farewell_after_what_was_forwarded() {
    let short = Duration::from_millis(200);
    let configs = [
        ("Cancelled", RelayConfig::default()),
        (
            "IdleTimeout",
            RelayConfig {
                idle_timeout: Some(short),
                ..RelayConfig::default()
            },
        ),
        (
            "MaxDuration",
            RelayConfig {
                max_duration: Some(short),
                ..RelayConfig::default()
            },
        ),
        ("Observer", RelayConfig::default()),
    ];
    for (want, config) in configs {
        let leaving = Leaving::new(b"<farewell>");
        let (mut client, mut upstream, cancel, task) = spawn_relay(1024, leaving.clone(), config);
        upstream.write_all(b"output").await.unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.unwrap();
        match want {
            "Cancelled" => cancel.cancel("ended by an admin"),
            // A refused chunk from the client: what went to the client is still whole.
            "Observer" => client.write_all(b"REFUSED").await.unwrap(),
            _ => {}
        }
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"<farewell>", "{want}");
        let report = task.await.unwrap();
        assert!(format!("{:?}", report.end).starts_with(want), "{report:?}");
        assert_eq!(report.farewell, 10);
        assert_eq!(
            report.upstream_to_client, 6,
            "the farewell is not forwarded bytes"
        );
        assert_eq!(leaving.asked().len(), 1);
        assert_eq!(leaving.asked()[0].1, 6, "{want}: the client got every byte");
        // The API server's connection is dropped, never sent a farewell.
        let mut rest = Vec::new();
        upstream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{want}");
    }
}

#[tokio::test]
async fn peers_ending_the_session_get_no_farewell() {
    let leaving = Leaving::new(b"<farewell>");
    let (mut client, mut upstream, _cancel, task) =
        spawn_relay(1024, leaving.clone(), RelayConfig::default());
    client.shutdown().await.unwrap();
    // The relay has passed the client's end on before the API server ends (else either may be
    // seen first).
    let mut nothing = Vec::new();
    upstream.read_to_end(&mut nothing).await.unwrap();
    upstream.write_all(b"last words").await.unwrap();
    upstream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"last words");
    let report = task.await.unwrap();
    assert!(matches!(report.end, RelayEnd::ClientClosed), "{report:?}");
    assert_eq!(report.farewell, 0);
    assert!(leaving.asked().is_empty());

    // The API server ended its sending (the client's write half is shut down), then custody
    // ended the session: nothing more can be written to the client.
    let leaving = Leaving::new(b"<farewell>");
    let (mut client, upstream, cancel, task) =
        spawn_relay(1024, leaving.clone(), RelayConfig::default());
    drop(upstream);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    cancel.cancel("ended by an admin");
    let report = task.await.unwrap();
    assert!(matches!(report.end, RelayEnd::Cancelled(_)), "{report:?}");
    assert_eq!(report.farewell, 0);
    assert!(leaving.asked().is_empty());
}

/// Case (c): a write to the client was cut off partway: the client may stand inside a frame.
#[tokio::test]
async fn no_farewell_after_a_chunk_the_client_got_only_part_of() {
    // The client reads nothing: the relay is stuck writing a chunk to it when it is cancelled.
    let leaving = Leaving::new(b"<farewell>");
    let (mut client, mut upstream, cancel, task) =
        spawn_relay(16, leaving.clone(), RelayConfig::default());
    upstream.write_all(&[7; 16]).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(100), upstream.write_all(&[8; 64])).await;
    cancel.cancel("ended by an admin");
    let report = tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the relay ends within a second")
        .unwrap();
    assert!(matches!(report.end, RelayEnd::Cancelled(_)), "{report:?}");
    assert_eq!(report.farewell, 0);
    assert!(leaving.asked().is_empty(), "not even asked");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(!rest.windows(10).any(|w| w == b"<farewell>"), "{rest:?}");
}

/// Case (b): the last chunk from the API server was shown to the observer and never written
/// (refused, or held by the observer when the session was cancelled). The farewell is asked
/// for where the client stands, before that chunk, and follows the bytes it did get.
#[tokio::test]
async fn farewell_before_a_chunk_the_client_did_not_get_at_all() {
    for (last, cancelled) in [(&b"REFUSED"[..], false), (&b"HOLD"[..], true)] {
        let leaving = Leaving::new(b"<farewell>");
        let (mut client, mut upstream, cancel, task) =
            spawn_relay(1024, leaving.clone(), RelayConfig::default());
        upstream.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        upstream.write_all(last).await.unwrap();
        if cancelled {
            // The observer is holding the chunk (the recorder's queue is full, say).
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel("recording_failure");
        }
        let report = tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the relay ends within a second")
            .unwrap();
        if cancelled {
            assert!(matches!(report.end, RelayEnd::Cancelled(_)), "{report:?}");
        } else {
            assert!(
                matches!(report.end, RelayEnd::Observer(Direction::ServerToClient, _)),
                "{report:?}"
            );
        }
        assert_eq!(report.upstream_to_client, 5);
        assert_eq!(report.farewell, 10);
        let asked = leaving.asked();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].1, 5, "without the chunk the client never got");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"<farewell>", "nothing of the unwritten chunk");
    }

    // Cancelled while the observer holds a chunk from the client: everything from the API
    // server reached the client.
    let leaving = Leaving::new(b"<farewell>");
    let (mut client, mut upstream, cancel, task) =
        spawn_relay(1024, leaving.clone(), RelayConfig::default());
    upstream.write_all(b"output").await.unwrap();
    let mut got = [0u8; 6];
    client.read_exact(&mut got).await.unwrap();
    client.write_all(b"HOLD").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel("recording_failure");
    let report = task.await.unwrap();
    assert_eq!(report.farewell, 10);
    assert_eq!(leaving.asked()[0].1, 6);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"<farewell>");
}

#[tokio::test]
async fn a_client_that_does_not_read_the_farewell_does_not_hold_the_session() {
    let leaving = Leaving {
        bytes: Bytes::from(vec![b'x'; 64 * 1024]),
        ..Leaving::default()
    };
    let (_client, _upstream, cancel, task) =
        spawn_relay(16, leaving.clone(), RelayConfig::default());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let asked = Instant::now();
    cancel.cancel("ended by an admin");
    let report = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("the relay ends")
        .unwrap();
    let took = asked.elapsed();
    assert!(
        took >= FAREWELL_TIMEOUT && took < FAREWELL_TIMEOUT + Duration::from_millis(500),
        "{took:?}"
    );
    assert_eq!(report.farewell, 0);
    assert_eq!(leaving.asked().len(), 1);
}
