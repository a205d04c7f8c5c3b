//! `latchkey serve` as an operator runs it: a real server process on a free port, a real
//! redis-server, a real HTTP client, and the demo handlers of `guest/demos/http`.
//!
//! Every handler instance is one request: its locks must be gone when it ends, however it
//! ends — a response, a trap, its deadline, its client hanging up, or a SIGTERM.

use std::time::{Duration, Instant};

use harness::{PATIENCE, RedisServer, ServeProcess, free_port, guest, latchkey, post};

/// `latchkey serve` of the demo handlers as app `jobs`, on `redis`, with `extra` flags.
fn serve_demo(redis: &RedisServer, extra: &[&str]) -> ServeProcess {
    serve_handler("http_demo", redis, extra)
}

/// [`serve_demo`] for the handler `name`: `http_demo` (WASI 0.2) or `http_demo_p3` (WASI
/// 0.3, with instance reuse), which answer the same routes.
fn serve_handler(name: &str, redis: &RedisServer, extra: &[&str]) -> ServeProcess {
    let store = format!("lockstore={}", redis.url());
    let demo = guest(name);
    let mut args = vec!["--app-id", "jobs", "--store", &store];
    args.extend_from_slice(extra);
    args.push(demo.to_str().unwrap());
    ServeProcess::start(&args)
}

/// While one request runs a job, every other request for it gets `409 Conflict` with
/// `Retry-After`: of 8 at once, exactly one ran it. The lock is the app's, named by the
/// server's flags, whatever the requests carry.
#[test]
fn a_job_runs_once_at_a_time() {
    let redis = RedisServer::start();
    let server = serve_demo(&redis, &[]);
    let url = server.url("/jobs/nightly?ms=1500");
    let answers: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || post(&url, PATIENCE).unwrap())
        })
        .collect();
    redis.wait_for_key("latchkey:{jobs:nightly}:lock");
    let answers: Vec<_> = answers.into_iter().map(|a| a.join().unwrap()).collect();
    let ran: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 409).collect();
    assert_eq!(ran.len(), 1, "{answers:?}");
    assert_eq!(refused.len(), 7, "{answers:?}");
    assert!(ran[0].body.starts_with("ran nightly fence "), "{answers:?}");
    assert!(
        refused
            .iter()
            .all(|a| a.retry_after.as_deref() == Some("1"))
    );
    assert_eq!(redis.lock_keys(), Vec::<String>::new());
}

/// 8 clients × 50 requests, each a locked read-modify-write of one file: exactly 400.
/// The same without the lock (the control) loses updates, so the test can tell.
#[test]
fn a_locked_counter_loses_no_update() {
    let redis = RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let dir = format!("{}::/data", data.path().display());
    let server = serve_demo(&redis, &["--dir", &dir]);
    let count = |path: &str| {
        let _ = std::fs::remove_file(data.path().join("counter"));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let url = server.url(path);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let answer = post(&url, PATIENCE).unwrap();
                        assert_eq!(answer.status, 200, "{answer:?}");
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        let text = std::fs::read_to_string(data.path().join("counter")).unwrap();
        text.trim().parse::<u64>().unwrap()
    };
    assert_eq!(count("/counter"), 400, "the lock let updates through");
    let unlocked = count("/counter?nolock");
    assert!(
        unlocked < 400,
        "the control lost no update: it cannot catch a bug"
    );
}

/// A handler that traps and one stopped at its deadline each held a job's 30 s lock: each
/// is gone at once, and the next request runs the job.
#[test]
fn a_failed_handler_frees_its_lock_at_once() {
    let redis = RedisServer::start();
    let server = serve_demo(&redis, &["--timeout", "1s"]);

    let trapped = post(&server.url("/jobs/a?then=panic"), PATIENCE).unwrap();
    assert_eq!(trapped.status, 500, "{trapped:?}");
    assert_eq!(
        post(&server.url("/jobs/a?ms=0"), PATIENCE).unwrap().status,
        200
    );

    let stopped = post(&server.url("/jobs/b?then=spin"), PATIENCE).unwrap();
    assert_eq!(stopped.status, 504, "{stopped:?}");
    assert_eq!(
        post(&server.url("/jobs/b?ms=0"), PATIENCE).unwrap().status,
        200
    );
    assert!(
        server.stderr().contains("the handler failed"),
        "{}",
        server.stderr()
    );
}

/// A handler whose client hung up is stopped at once, and its lock freed: nothing else
/// would stop it for a minute here (no deadline).
#[test]
fn a_handler_whose_client_hung_up_frees_its_lock_at_once() {
    let redis = RedisServer::start();
    let server = serve_demo(&redis, &[]);
    // The client gives up after 300 ms; the handler would sleep a minute.
    let url = server.url("/jobs/c?then=sleep");
    let hung_up = std::thread::spawn(move || post(&url, Duration::from_millis(300)));
    redis.wait_for_key("latchkey:{jobs:c}:lock");
    assert!(hung_up.join().unwrap().is_err(), "the handler answered");
    let started = Instant::now();
    while !redis.lock_keys().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the lock outlived its client: {:?}",
            redis.lock_keys()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        post(&server.url("/jobs/c?ms=0"), PATIENCE).unwrap().status,
        200
    );
}

/// Two handlers spinning until their deadline do not keep a cheap request from being
/// served: it is answered while both still spin.
#[test]
fn cheap_requests_are_served_while_handlers_spin() {
    let redis = RedisServer::start();
    let server = serve_demo(&redis, &["--timeout", "5s"]);
    let spinners: Vec<_> = ["x", "y"]
        .into_iter()
        .map(|id| {
            let url = server.url(&format!("/jobs/{id}?then=spin"));
            std::thread::spawn(move || post(&url, PATIENCE).unwrap())
        })
        .collect();
    redis.wait_for_key("latchkey:{jobs:x}:lock");
    redis.wait_for_key("latchkey:{jobs:y}:lock");
    let cheap = post(&server.url("/jobs/z?ms=0"), PATIENCE).unwrap();
    let still_spinning = spinners.iter().filter(|s| !s.is_finished()).count();
    assert_eq!(cheap.status, 200, "{cheap:?}");
    assert_eq!(still_spinning, 2, "served only once a spinner had stopped");
    for spinner in spinners {
        assert_eq!(spinner.join().unwrap().status, 504);
    }
}

/// One request computing after an await (it spins once it holds its lock) does not hold up
/// the server's other requests: 20 cheap ones, sent one after another, are all answered
/// while it still spins — by a WASI 0.3 handler, whose instances serve many requests each,
/// as by a WASI 0.2 one, whose every request has its own. Their p99 is of the 0.2 case's
/// order (a fresh instance for those beside the busy one), not the spinner's run time;
/// and 40 sent at once, more than an instance serves at once, are answered as well.
#[test]
fn a_busy_request_does_not_hold_up_the_others() {
    let mut p99 = Vec::new();
    for handler in ["http_demo", "http_demo_p3"] {
        let redis = RedisServer::start();
        let deadline = format!("{}s", PATIENCE.as_secs() * 2);
        let server = serve_handler(handler, &redis, &["--deadline", &deadline]);
        let url = server.url("/jobs/busy?then=spin");
        let spinner = std::thread::spawn(move || post(&url, PATIENCE * 3));
        redis.wait_for_key("latchkey:{jobs:busy}:lock");
        let mut took: Vec<Duration> = (0..20)
            .map(|i| {
                let started = Instant::now();
                let cheap = post(&server.url(&format!("/jobs/c{i}?ms=0")), PATIENCE).unwrap();
                assert_eq!(cheap.status, 200, "{handler}: {cheap:?}");
                started.elapsed()
            })
            .collect();
        // And 40 at once: more than one instance takes at once (16).
        let at_once: Vec<_> = (0..40)
            .map(|i| {
                let url = server.url(&format!("/jobs/d{i}?ms=0"));
                std::thread::spawn(move || post(&url, PATIENCE).unwrap().status)
            })
            .collect();
        for answer in at_once {
            assert_eq!(answer.join().unwrap(), 200, "{handler}");
        }
        assert!(
            !spinner.is_finished(),
            "{handler}: the cheap requests were served only once the spinner had stopped"
        );
        took.sort();
        p99.push(took[took.len() * 99 / 100]);
        drop(server);
    }
    let (p2, p3) = (p99[0], p99[1]);
    eprintln!("p99 of cheap requests beside a busy one: WASI 0.2 {p2:?}, WASI 0.3 {p3:?}");
    assert!(
        p3 <= p2 * 10 + Duration::from_millis(250),
        "p99 beside a busy request: {p3:?} with WASI 0.3, {p2:?} with 0.2"
    );
}

/// SIGTERM while a request holds a lock: the server stops accepting, gives the request its
/// grace period, stops it, releases its lock and exits 0; Redis holds no lock — for a WASI
/// 0.2 handler, and for a request of a reused WASI 0.3 instance.
#[test]
fn sigterm_releases_every_lock_and_exits_cleanly() {
    for handler in ["http_demo", "http_demo_p3"] {
        let redis = RedisServer::start();
        let mut server = serve_handler(handler, &redis, &["--shutdown-grace", "500ms"]);
        let url = server.url("/jobs/long?then=sleep");
        let in_flight = std::thread::spawn(move || post(&url, PATIENCE));
        redis.wait_for_key("latchkey:{jobs:long}:lock");
        let status = server.terminate();
        assert!(status.success(), "{handler}: {status}: {}", server.stderr());
        assert_eq!(redis.lock_keys(), Vec::<String>::new(), "{handler}");
        let answer = in_flight.join().unwrap().unwrap();
        assert_eq!(answer.status, 503, "{handler}: {answer:?}");
    }
}

/// Each mistake is one line on stderr and a non-zero exit, before anything is served.
#[test]
fn mistakes_are_one_line_errors_before_serving() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let (lockctl, demo) = (guest("lockctl"), guest("http_demo"));
    let dead = format!("lockstore=redis://127.0.0.1:{}", free_port());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["serve", lockctl.to_str().unwrap()], "cannot be served"),
        (
            vec!["serve", "--addr", &taken, demo.to_str().unwrap()],
            "cannot listen on",
        ),
        (
            vec!["serve", "--addr", "nowhere", demo.to_str().unwrap()],
            "invalid value 'nowhere'",
        ),
        (
            vec!["serve", "--shutdown-grace", "soon", demo.to_str().unwrap()],
            "invalid value 'soon'",
        ),
        (
            vec!["serve", "--store", &dead, demo.to_str().unwrap()],
            "could not be reached",
        ),
        (
            vec!["serve", "--dir", "/no/such/dir", demo.to_str().unwrap()],
            "cannot open /no/such/dir",
        ),
        (vec!["serve", "missing.wasm"], "cannot read missing.wasm"),
        (
            vec!["serve", "--header-timeout", "0s", demo.to_str().unwrap()],
            "must be longer than zero",
        ),
        (
            vec!["serve", "--app-id", "a\rb", demo.to_str().unwrap()],
            "--app-id: the app id holds a control character",
        ),
    ];
    for (args, expected) in cases {
        let out = latchkey().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// With `--max-concurrent-requests 2`, a third request while two run is refused at once
/// with `503` and `Retry-After`, and served again once a slot is free — by a WASI 0.2
/// handler and by a WASI 0.3 one whose instance serves both running requests.
#[test]
fn requests_beyond_the_limit_are_refused_not_queued() {
    for handler in ["http_demo", "http_demo_p3"] {
        let redis = RedisServer::start();
        let server = serve_handler(handler, &redis, &["--max-concurrent-requests", "2"]);
        let busy: Vec<_> = ["p", "q"]
            .into_iter()
            .map(|id| {
                let url = server.url(&format!("/jobs/{id}?ms=1500"));
                std::thread::spawn(move || post(&url, PATIENCE).unwrap())
            })
            .collect();
        redis.wait_for_key("latchkey:{jobs:p}:lock");
        redis.wait_for_key("latchkey:{jobs:q}:lock");
        let refused = post(&server.url("/jobs/r?ms=0"), PATIENCE).unwrap();
        assert_eq!(refused.status, 503, "{handler}: {refused:?}");
        assert_eq!(refused.retry_after.as_deref(), Some("1"), "{handler}");
        for request in busy {
            assert_eq!(request.join().unwrap().status, 200, "{handler}");
        }
        let again = post(&server.url("/jobs/r?ms=0"), PATIENCE).unwrap();
        assert_eq!(again.status, 200, "{handler}: {again:?}");
    }
}

/// Reads from `stream` until the server closes it; false if it is still open after
/// [`PATIENCE`].
fn closed_by_the_server(mut stream: std::net::TcpStream) -> bool {
    use std::io::Read as _;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buffer = [0; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// `POST PATH` on `stream`, keeping the connection alive, and the response's first line.
fn post_keeping_alive(stream: &mut std::net::TcpStream, path: &str) -> String {
    use std::io::{BufRead as _, Write as _};
    let request = format!("POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    // The rest of the head and the body, so that the connection is idle again.
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    std::io::Read::read_exact(&mut reader, &mut body).unwrap();
    status.trim_end().to_owned()
}

/// Connections that send nothing, that stop halfway through their headers, or that stay
/// idle after a request are closed by the server once the header timeout passes (10 s
/// unless `--header-timeout` says otherwise): a client cannot hold a connection, its file
/// descriptor and its buffers, by saying nothing.
#[test]
fn stalled_and_idle_connections_are_closed() {
    use std::io::Write as _;
    let redis = RedisServer::start();
    let server = serve_demo(&redis, &[]);
    let address = server.address();
    let silent = std::net::TcpStream::connect(&address).unwrap();
    let mut halfway = std::net::TcpStream::connect(&address).unwrap();
    halfway
        .write_all(b"POST /counter HTTP/1.1\r\nHost: test\r\nX-Slow: 1")
        .unwrap();
    let mut kept = std::net::TcpStream::connect(&address).unwrap();
    assert_eq!(post_keeping_alive(&mut kept, "/jobs/a"), "HTTP/1.1 200 OK");
    for (what, stream) in [("silent", silent), ("halfway", halfway), ("idle", kept)] {
        assert!(
            closed_by_the_server(stream),
            "a {what} connection stayed open"
        );
    }
}

/// At most `--max-connections` connections are served at once: past them, a new client
/// waits in the listen backlog — it takes no file descriptor of the host's — and is served
/// once a connection closes.
#[test]
fn connections_beyond_the_limit_wait_for_a_free_one() {
    use std::io::Write as _;
    let redis = RedisServer::start();
    let flags = ["--max-connections", "4", "--header-timeout", "60s"];
    let server = serve_demo(&redis, &flags);
    let address = server.address();
    let mut held: Vec<_> = (0..4)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            assert_eq!(
                post_keeping_alive(&mut stream, "/jobs/a"),
                "HTTP/1.1 200 OK"
            );
            stream
        })
        .collect();
    let mut fifth = std::net::TcpStream::connect(&address).unwrap();
    fifth
        .write_all(b"POST /jobs/b HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    // Not served while the four hold every slot. (A slow machine only makes this wait
    // longer: it cannot make a working limit fail.)
    fifth
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buffer = [0; 64];
    let early = std::io::Read::read(&mut fifth, &mut buffer);
    assert!(early.is_err(), "served beyond the limit: {early:?}");
    drop(held.pop());
    fifth.set_read_timeout(Some(PATIENCE)).unwrap();
    let n = std::io::Read::read(&mut fifth, &mut buffer).unwrap();
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&buffer[..n])
    );
}

/// A handler writing to a stderr nobody reads cannot freeze the server: guest output goes
/// out from a thread of its own through a bounded buffer, and what does not fit is dropped
/// and counted. Four handlers write 4 MiB each into a pipe that holds 64 KiB; a cheap request
/// is still answered, and SIGTERM still ends the server. (Output was written in place, on a
/// runtime thread: once the pipe was full, requests went unanswered, deadlines did not fire
/// and SIGTERM was ignored.)
#[test]
fn output_nobody_reads_does_not_freeze_the_server() {
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let demo = guest("http_demo");
    let args = [
        "--app-id",
        "jobs",
        "--store",
        &store,
        demo.to_str().unwrap(),
    ];
    let mut server = ServeProcess::start_unread(&args);
    let shouting: Vec<_> = (0..4)
        .map(|n| {
            let url = server.url(&format!("/jobs/shout-{n}?then=shout"));
            std::thread::spawn(move || post(&url, PATIENCE))
        })
        .collect();
    let cheap = post(&server.url("/jobs/cheap?ms=0"), PATIENCE).expect("an answer");
    assert_eq!(cheap.status, 200, "{cheap:?}");
    for shout in shouting {
        let answer = shout.join().unwrap().expect("an answer");
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert!(server.terminate().success());
}

/// Sends the head of `POST /upload` with a body of `length` bytes, on a connection of its
/// own, and returns the connection for the body.
fn start_upload(server: &ServeProcess, length: u64) -> std::net::TcpStream {
    use std::io::Write as _;
    let address = server.address();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// A client that trickles its request body holds a request slot only until the request's
/// deadline — 30 s unless `--deadline` says otherwise — so a few of them cannot hold every
/// slot for as long as they like. Two clients send a byte every half second to a handler
/// that reads its body, with two slots: a request finds room again within the default
/// deadline, while they are still trickling. (Without a default deadline they held the
/// slots until their bodies ended, about eight minutes here.)
#[test]
fn slow_bodies_hold_a_slot_only_until_the_deadline() {
    use std::io::Write as _;
    let redis = RedisServer::start();
    let server = serve_demo(&redis, &["--max-concurrent-requests", "2"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tricklers: Vec<_> = (0..2)
        .map(|_| {
            let mut stream = start_upload(&server, 1000);
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && stream.write_all(b"x").is_ok()
                {
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        })
        .collect();
    let started = Instant::now();
    loop {
        let answer = post(&server.url("/jobs/cheap?ms=0"), PATIENCE).unwrap();
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(
            started.elapsed() < PATIENCE,
            "the trickling clients kept every slot"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for trickler in tricklers {
        trickler.join().unwrap();
    }
}

/// A 1 GiB request body streams through a handler that reads it, with the server's memory
/// flat (its high-water mark stays far below the body's size).
#[test]
fn a_large_body_streams_in_flat_memory() {
    use std::io::{Read as _, Write as _};
    const LENGTH: u64 = 1 << 30;
    let redis = RedisServer::start();
    let server = serve_demo(&redis, &[]);
    let mut stream = start_upload(&server, LENGTH);
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..(LENGTH >> 20) {
        stream.write_all(&chunk).unwrap();
    }
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 1024];
    while !String::from_utf8_lossy(&answer).contains("bytes") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains(&format!("read {LENGTH} bytes")), "{answer}");
    let high_water_kb = server.status_field("VmHWM");
    assert!(
        high_water_kb < 256 * 1024,
        "{high_water_kb} kB at most in memory"
    );
}

/// A request head larger than the 64 KiB the server keeps is refused with `431`.
#[test]
fn oversized_headers_are_refused() {
    use std::io::{Read as _, Write as _};
    let redis = RedisServer::start();
    let server = serve_demo(&redis, &[]);
    let address = server.address();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /jobs/a HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
        "x".repeat(100 << 10)
    );
    // The server may answer, and close, before it has read it all.
    let _ = stream.write_all(head.as_bytes());
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = [0; 64];
    let n = stream.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

/// SIGTERM in the middle of a flood of requests: the server stops accepting, the requests
/// in flight are stopped after the grace, and it exits cleanly with no lock left.
#[test]
fn sigterm_during_a_flood_exits_cleanly() {
    let redis = RedisServer::start();
    let mut server = serve_demo(&redis, &["--shutdown-grace", "500ms"]);
    let flood: Vec<_> = (0..50)
        .map(|n| {
            let url = server.url(&format!("/jobs/flood-{n}?ms=5000"));
            std::thread::spawn(move || post(&url, PATIENCE))
        })
        .collect();
    redis.wait_for_key("latchkey:{jobs:flood-0}:lock");
    let status = server.terminate();
    assert!(status.success(), "{status}: {}", server.stderr());
    for request in flood {
        // Answered with 503 at shutdown, or refused with the connection: either way, ended.
        let _ = request.join().unwrap();
    }
    assert_eq!(redis.lock_keys(), Vec::<String>::new());
}
