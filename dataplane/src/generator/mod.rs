//! Frame generators, for the benchmarks and the tests (the dataplane never
//! uses them): a set of frames sent out of an interface as fast as the
//! kernel takes them.
//!
//! Two ways behind one [`Generator`]:
//!
//! - [`Method::LiveFrames`]: `BPF_PROG_RUN` with XDP live frames
//!   ([`LiveFrames`]): no socket, no skb, one frame given once and sent
//!   `count` times; the fastest way (docs/benchmarks.md has the rates). Some
//!   kernels refuse it: 6.18.44-fc-v1300 answers `EPERM`.
//! - [`Method::AfXdp`]: an AF_XDP socket's TX ring over a UMEM that holds
//!   the frames ([`xsk_flood`]); in copy mode an skb per frame. Works
//!   wherever AF_XDP sockets do, which the dataplane needs anyway.
//!
//! Which is faster depends on the pattern. One frame in long runs (a
//! benchmark flat out): live frames, 5.4 against 1.4 Mpps of 64-byte frames
//! into an XDP sink here. Many kinds of frame in short runs (the
//! hostile-traffic test's 4096 of each): AF_XDP, about 4× live frames,
//! whose every call sets up and tears down a page pool (tens of ms with an
//! RCU grace period). [`Method::choose`] takes the caller's preference,
//! falls back from live frames to AF_XDP where a one-frame probe shows that
//! the kernel refuses them, and obeys [`METHOD_VARIABLE`] over both, so
//! that either way can be forced on any kernel.
//!
//! What a generator sends under encryption comes from [`sealer`]: a peer's
//! worker sealing each frame under a new counter.

mod live_frames;
pub mod sealer;
pub mod xsk_flood;

use std::sync::OnceLock;

pub use live_frames::LiveFrames;

use crate::xdp::XdpError;
use crate::xdp::iface::ifindex;

/// Names the generator to use: `live-frames` or `af-xdp`; unset or `auto`,
/// live frames where the kernel accepts them.
pub const METHOD_VARIABLE: &str = "DETOUR_FRAME_GENERATOR";

/// Frames the kernel sends per flush with live frames (its default batch).
const LIVE_BATCH: u32 = 64;

/// How a generator puts frames on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `BPF_PROG_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`.
    LiveFrames,
    /// An AF_XDP socket's TX ring.
    AfXdp,
}

impl Method {
    /// The name reports give it.
    pub fn name(self) -> &'static str {
        match self {
            Method::LiveFrames => "xdp-live-frames",
            Method::AfXdp => "af-xdp-tx",
        }
    }

    /// The generator to use here, and why: the one [`METHOD_VARIABLE`]
    /// names, if set (`auto` or unset names none); otherwise `preferred`,
    /// unless that is live frames and [`live_frames_refused`] finds them
    /// refused, when it is AF_XDP.
    pub fn choose(preferred: Method) -> Result<Choice, GeneratorError> {
        choose(
            std::env::var(METHOD_VARIABLE),
            preferred,
            live_frames_refused,
        )
    }
}

/// [`Method::choose`], given the variable's value and the probe.
fn choose(
    variable: Result<String, std::env::VarError>,
    preferred: Method,
    refusal: impl FnOnce() -> Option<String>,
) -> Result<Choice, GeneratorError> {
    let forced = |method: Method, value: &str| Choice {
        method,
        why: format!("{METHOD_VARIABLE}={value}"),
    };
    match variable.as_deref() {
        Ok(v @ "live-frames") => Ok(forced(Method::LiveFrames, v)),
        Ok(v @ "af-xdp") => Ok(forced(Method::AfXdp, v)),
        Ok("auto") | Err(std::env::VarError::NotPresent) => Ok(match preferred {
            Method::AfXdp => Choice {
                method: Method::AfXdp,
                why: "preferred here".into(),
            },
            Method::LiveFrames => match refusal() {
                None => Choice {
                    method: Method::LiveFrames,
                    why: "the kernel accepts XDP live frames".into(),
                },
                Some(refusal) => Choice {
                    method: Method::AfXdp,
                    why: format!("XDP live frames refused: {refusal}"),
                },
            },
        }),
        Ok(other) => Err(GeneratorError::UnknownMethod(other.into())),
        Err(std::env::VarError::NotUnicode(other)) => Err(GeneratorError::UnknownMethod(
            other.to_string_lossy().into_owned(),
        )),
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The generator [`Method::choose`] picked, and why.
#[derive(Debug, Clone)]
pub struct Choice {
    pub method: Method,
    pub why: String,
}

/// Why this kernel refuses XDP live frames, or `None` if it accepts them:
/// one frame sent with them through the calling thread's `lo` (where it
/// goes nowhere: the loopback device has no XDP transmit). Probed once per
/// process; the kernel's answer does not change while it runs.
pub fn live_frames_refused() -> Option<String> {
    static REFUSAL: OnceLock<Option<String>> = OnceLock::new();
    REFUSAL
        .get_or_init(|| {
            let probe = || -> Result<(), GeneratorError> {
                let lo = ifindex("lo").map_err(|source| GeneratorError::Interface {
                    iface: "lo".into(),
                    source,
                })?;
                let frame = [0u8; 60];
                LiveFrames::load()
                    .and_then(|g| g.send(&frame, lo, 1, 1))
                    .map_err(GeneratorError::LiveFrames)
            };
            probe()
                .err()
                .map(|e| format!("{:#}", anyhow::Error::from(e)))
        })
        .clone()
}

#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    #[error("{METHOD_VARIABLE}={0:?}: not a generator (live-frames, af-xdp or auto)")]
    UnknownMethod(String),
    #[error("XDP live frames (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES)")]
    LiveFrames(#[source] XdpError),
    #[error("an AF_XDP TX socket on {iface:?} queue {queue}")]
    Socket {
        iface: String,
        queue: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("no interface {iface:?} in this network namespace")]
    Interface {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "frame {index} is {len} bytes; a generator sends frames of {} to {} bytes",
        MIN_FRAME,
        xsk_flood::FRAME_SIZE
    )]
    FrameSize { index: usize, len: usize },
}

/// The shortest frame the kernel transmits: an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// A set of frames, ready to be sent out of one interface, each as often
/// as asked.
pub struct Generator {
    iface: String,
    queue: u32,
    way: Way,
}

enum Way {
    Live {
        program: LiveFrames,
        ifindex: u32,
        frames: Vec<Vec<u8>>,
    },
    /// The frames are in the socket's UMEM.
    Xsk(xsk_flood::XskFlood),
}

impl Generator {
    /// A generator of `frames` out of `iface` in the calling thread's
    /// network namespace (with AF_XDP, from TX queue `queue`).
    pub fn new(
        method: Method,
        iface: &str,
        queue: u32,
        frames: Vec<Vec<u8>>,
    ) -> Result<Generator, GeneratorError> {
        let sizes = MIN_FRAME..=xsk_flood::FRAME_SIZE as usize;
        if let Some((index, f)) = frames
            .iter()
            .enumerate()
            .find(|(_, f)| !sizes.contains(&f.len()))
        {
            return Err(GeneratorError::FrameSize {
                index,
                len: f.len(),
            });
        }
        let way = match method {
            Method::LiveFrames => Way::Live {
                program: LiveFrames::load().map_err(GeneratorError::LiveFrames)?,
                ifindex: ifindex(iface).map_err(|source| GeneratorError::Interface {
                    iface: iface.into(),
                    source,
                })?,
                frames,
            },
            Method::AfXdp => Way::Xsk(xsk_flood::XskFlood::new(iface, queue, &frames).map_err(
                |source| GeneratorError::Socket {
                    iface: iface.into(),
                    queue,
                    source,
                },
            )?),
        };
        Ok(Generator {
            iface: iface.into(),
            queue,
            way,
        })
    }

    pub fn method(&self) -> Method {
        match self.way {
            Way::Live { .. } => Method::LiveFrames,
            Way::Xsk(_) => Method::AfXdp,
        }
    }

    /// Sends frame `index` `count` times, and returns once the interface
    /// has taken every one (passed it to its driver, which may still drop
    /// it: a full receive ring at a veth's other end, say).
    pub fn send(&mut self, index: usize, count: u32) -> Result<(), GeneratorError> {
        match &mut self.way {
            Way::Live {
                program,
                ifindex,
                frames,
            } => program
                .send(&frames[index], *ifindex, count, LIVE_BATCH)
                .map_err(GeneratorError::LiveFrames),
            Way::Xsk(flood) => flood
                .send(index, count)
                .map_err(|source| GeneratorError::Socket {
                    iface: self.iface.clone(),
                    queue: self.queue,
                    source,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env::VarError;

    fn refused() -> Option<String> {
        Some("EPERM".into())
    }

    fn accepted() -> Option<String> {
        None
    }

    #[test]
    fn live_frames_are_taken_where_preferred_and_accepted() {
        let c = choose(Err(VarError::NotPresent), Method::LiveFrames, accepted).unwrap();
        assert_eq!(c.method, Method::LiveFrames);
    }

    #[test]
    fn a_refusal_of_live_frames_falls_back_to_af_xdp_and_says_why() {
        let c = choose(Ok("auto".into()), Method::LiveFrames, refused).unwrap();
        assert_eq!(c.method, Method::AfXdp);
        assert!(c.why.contains("refused: EPERM"), "{}", c.why);
    }

    #[test]
    fn a_preference_for_af_xdp_never_probes() {
        let c = choose(Err(VarError::NotPresent), Method::AfXdp, || {
            panic!("probed")
        })
        .unwrap();
        assert_eq!(c.method, Method::AfXdp);
    }

    #[test]
    fn the_variable_forces_either_way_whatever_the_kernel_says() {
        let c = choose(Ok("live-frames".into()), Method::AfXdp, refused).unwrap();
        assert_eq!(c.method, Method::LiveFrames);
        assert_eq!(c.why, "DETOUR_FRAME_GENERATOR=live-frames");
        let c = choose(Ok("af-xdp".into()), Method::LiveFrames, accepted).unwrap();
        assert_eq!(c.method, Method::AfXdp);
    }

    #[test]
    fn an_unknown_generator_is_refused_by_name() {
        let e = choose(Ok("pktgen".into()), Method::LiveFrames, accepted).unwrap_err();
        assert!(e.to_string().contains("\"pktgen\""), "{e}");
    }

    #[test]
    fn frames_shorter_than_a_header_or_longer_than_a_umem_frame_are_refused() {
        for (len, index) in [(13, 1), (xsk_flood::FRAME_SIZE as usize + 1, 1)] {
            let frames = vec![vec![0; 60], vec![0; len]];
            match Generator::new(Method::AfXdp, "lo", 0, frames) {
                Err(GeneratorError::FrameSize { index: i, len: l }) => {
                    assert_eq!((i, l), (index, len))
                }
                Err(e) => panic!("{len} bytes: {e}"),
                Ok(_) => panic!("{len} bytes taken"),
            }
        }
    }
}
