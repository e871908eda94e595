//! The cost of wharf's own request checks on the hot path (issue 11):
//! the framing tap over a typical browser request head, the header checks
//! and path normalisation. `cargo bench --bench strict` prints ns per request.

use std::hint::black_box;
use std::time::Instant;

use wharf::config::Limits;
use wharf::http::framing::Scanner;
use wharf::http::strict;

const HEAD: &[u8] = b"GET /socket.io/?EIO=4&transport=polling&t=P0abcde HTTP/1.1\r\n\
Host: app.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Cookie: io=abcdefghijklmnop; wharf=0123456789abcdef0123456789abcdef\r\n\
Connection: keep-alive\r\n\
Referer: https://app.example.com/chat/room/42\r\n\
Content-Length: 0\r\n\
\r\n";

fn per_iteration(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() {
    let iterations = 1_000_000;
    let mut scanner = Scanner::default();
    let tap = per_iteration(iterations, || {
        black_box(scanner.feed(black_box(HEAD)));
    });
    let request = {
        let text = std::str::from_utf8(HEAD).unwrap();
        let mut builder = http::Request::builder()
            .method("GET")
            .uri("/socket.io/?EIO=4&transport=polling&t=P0abcde");
        for line in text.split("\r\n").skip(1).filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(": ").unwrap();
            builder = builder.header(name, value);
        }
        builder.body(()).unwrap()
    };
    let limits = Limits::default();
    let checks = per_iteration(iterations, || {
        black_box(
            strict::check_request(
                request.method(),
                request.uri(),
                request.headers(),
                None,
                &limits,
            )
            .unwrap(),
        );
    });
    let dotted = per_iteration(iterations, || {
        black_box(strict::normalize_path(black_box("/a/b/../c/%7euser/./x")).unwrap());
    });
    println!("framing tap over a {}-byte head: {tap:.0} ns", HEAD.len());
    println!("header, target and path checks (nothing to normalise): {checks:.0} ns");
    println!("normalising a path with dot segments and an escape: {dotted:.0} ns");
}
