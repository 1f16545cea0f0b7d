//! Counting rows in a COPY stream as it passes through, and holding it to a row rate.
//!
//! The bytes go from the source's `COPY … TO STDOUT` to the target's `COPY … FROM STDIN`
//! untouched; this reader only watches tuple boundaries (binary format) or line ends (text
//! format), so memory stays at one read buffer whatever the row or chunk size. Malformed input
//! never panics: the parser just stops counting (the target rejects the stream anyway).

use std::io::Read;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

/// Counts tuples of PostgreSQL's binary COPY format, fed in arbitrary pieces.
#[derive(Debug)]
pub(crate) struct BinaryTupleCounter {
    state: State,
    /// Bytes collected for the integer being read.
    buf: [u8; 19],
    got: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// The 11-byte signature, 4-byte flags and 4-byte extension length.
    Header,
    SkipExtension(u32),
    FieldCount,
    FieldLen {
        left: u16,
    },
    FieldData {
        remaining: u32,
        left: u16,
    },
    Trailer,
    Broken,
}

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

impl BinaryTupleCounter {
    pub(crate) fn new() -> Self {
        BinaryTupleCounter {
            state: State::Header,
            buf: [0; 19],
            got: 0,
        }
    }

    /// Collects `n` bytes into `buf`; returns how many of `data` it used and whether done.
    fn collect(&mut self, data: &[u8], n: usize) -> (usize, bool) {
        let take = (n - self.got).min(data.len());
        self.buf[self.got..self.got + take].copy_from_slice(&data[..take]);
        self.got += take;
        let done = self.got == n;
        (take, done)
    }

    /// Feeds the next piece of the stream; returns the number of tuples that started in it.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut tuples = 0;
        while !data.is_empty() {
            match self.state {
                State::Header => {
                    let (used, done) = self.collect(data, 19);
                    data = &data[used..];
                    if done {
                        self.got = 0;
                        self.state = if &self.buf[..11] != SIGNATURE {
                            State::Broken
                        } else {
                            let ext = u32::from_be_bytes([
                                self.buf[15],
                                self.buf[16],
                                self.buf[17],
                                self.buf[18],
                            ]);
                            State::SkipExtension(ext)
                        };
                    }
                }
                State::SkipExtension(n) => {
                    let skip = (n as usize).min(data.len());
                    data = &data[skip..];
                    let left = n - skip as u32;
                    self.state = if left == 0 {
                        State::FieldCount
                    } else {
                        State::SkipExtension(left)
                    };
                }
                State::FieldCount => {
                    let (used, done) = self.collect(data, 2);
                    data = &data[used..];
                    if done {
                        self.got = 0;
                        let n = i16::from_be_bytes([self.buf[0], self.buf[1]]);
                        self.state = match n {
                            -1 => State::Trailer,
                            0 => {
                                tuples += 1;
                                State::FieldCount
                            }
                            n if n > 0 => {
                                tuples += 1;
                                State::FieldLen { left: n as u16 }
                            }
                            _ => State::Broken,
                        };
                    }
                }
                State::FieldLen { left } => {
                    let (used, done) = self.collect(data, 4);
                    data = &data[used..];
                    if done {
                        self.got = 0;
                        let len = i32::from_be_bytes([
                            self.buf[0],
                            self.buf[1],
                            self.buf[2],
                            self.buf[3],
                        ]);
                        let left = left - 1;
                        self.state = match len {
                            -1 | 0 => Self::next_field(left),
                            n if n > 0 => State::FieldData {
                                remaining: n as u32,
                                left,
                            },
                            _ => State::Broken,
                        };
                    }
                }
                State::FieldData { remaining, left } => {
                    let skip = (remaining as usize).min(data.len());
                    data = &data[skip..];
                    let remaining = remaining - skip as u32;
                    self.state = if remaining == 0 {
                        Self::next_field(left)
                    } else {
                        State::FieldData { remaining, left }
                    };
                }
                State::Trailer | State::Broken => return tuples,
            }
        }
        tuples
    }

    fn next_field(left: u16) -> State {
        if left == 0 {
            State::FieldCount
        } else {
            State::FieldLen { left }
        }
    }
}

/// Waits until `rows` more rows may pass under the shared rate limit.
pub(crate) fn throttle(limiter: &DefaultDirectRateLimiter, burst: NonZeroU32, mut rows: u64) {
    let clock = DefaultClock::default();
    while rows > 0 {
        let n = rows.min(u64::from(burst.get())) as u32;
        let Some(n) = NonZeroU32::new(n) else { return };
        match limiter.check_n(n) {
            Ok(Ok(())) => rows -= u64::from(n.get()),
            Ok(Err(not_until)) => std::thread::sleep(not_until.wait_time_from(clock.now())),
            // Cannot happen: n ≤ burst. Let the rows pass rather than spin.
            Err(_) => return,
        }
    }
}

/// A shared row-rate limit.
pub(crate) struct Throttle {
    limiter: DefaultDirectRateLimiter,
    burst: NonZeroU32,
}

impl Throttle {
    pub(crate) fn per_second(rows: NonZeroU32) -> Throttle {
        // A burst of a tenth of a second keeps the rate smooth over any window above ~100 ms.
        let burst = NonZeroU32::new((rows.get() / 10).max(1)).unwrap_or(NonZeroU32::MIN);
        Throttle {
            limiter: DefaultDirectRateLimiter::direct(Quota::per_second(rows).allow_burst(burst)),
            burst,
        }
    }
}

/// Passes a COPY stream through, counting rows and bytes and holding the row rate.
pub(crate) struct Counting<'a, R> {
    inner: R,
    binary: Option<BinaryTupleCounter>,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    throttle: Option<&'a Throttle>,
    live_rows: &'a AtomicU64,
    live_bytes: &'a AtomicU64,
}

impl<'a, R: Read> Counting<'a, R> {
    pub(crate) fn new(
        inner: R,
        binary: bool,
        throttle: Option<&'a Throttle>,
        live_rows: &'a AtomicU64,
        live_bytes: &'a AtomicU64,
    ) -> Self {
        Counting {
            inner,
            binary: binary.then(BinaryTupleCounter::new),
            rows: 0,
            bytes: 0,
            throttle,
            live_rows,
            live_bytes,
        }
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = &buf[..n];
        let rows = match &mut self.binary {
            Some(counter) => counter.feed(data),
            None => data.iter().filter(|&&b| b == b'\n').count() as u64,
        };
        if let Some(t) = self.throttle {
            throttle(&t.limiter, t.burst, rows);
        }
        self.rows += rows;
        self.bytes += n as u64;
        self.live_rows.fetch_add(rows, Ordering::Relaxed);
        self.live_bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&0u32.to_be_bytes());
        s.extend_from_slice(&4u32.to_be_bytes());
        s.extend_from_slice(b"ext!");
        for r in rows {
            s.extend_from_slice(&(r.len() as i16).to_be_bytes());
            for f in r {
                match f {
                    None => s.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        s.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        s.extend_from_slice(b);
                    }
                }
            }
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        s
    }

    #[test]
    fn counts_tuples_however_the_stream_is_split() {
        let rows: Vec<Vec<Option<Vec<u8>>>> = (0..50)
            .map(|i| {
                vec![
                    Some(vec![7; i * 37]),
                    None,
                    Some(vec![]),
                    Some(b"\n\n".to_vec()),
                ]
            })
            .collect();
        let s = stream(&rows);
        for piece in [1, 2, 3, 7, 64, 1000, s.len()] {
            let mut c = BinaryTupleCounter::new();
            let n: u64 = s.chunks(piece).map(|p| c.feed(p)).sum();
            assert_eq!(n, 50, "piece size {piece}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..2_000 {
            let mut b: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
            if rng.bool() {
                let mut s = SIGNATURE.to_vec();
                s.extend_from_slice(&[0; 8]);
                s.append(&mut b);
                b = s;
            }
            let mut c = BinaryTupleCounter::new();
            for p in b.chunks(rng.usize(1..17)) {
                c.feed(p);
            }
        }
    }

    #[test]
    fn throttle_holds_the_rate() {
        let t = Throttle::per_second(NonZeroU32::new(2_000).unwrap());
        let start = std::time::Instant::now();
        // 200 burst rows pass at once, then 2,000 rows/s: 1,000 rows take about 0.4 s.
        for _ in 0..100 {
            throttle(&t.limiter, t.burst, 10);
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((0.3..0.7).contains(&secs), "{secs}");
    }
}
