//! Probing peers: when to send the next probe, what its answer (or its
//! silence) says about the link, and when the link is up or down.
//!
//! Each peer gets a [`PeerProbe`]: probes go out at a steady `interval`
//! while the link answers; once a probe goes unanswered past its timeout,
//! the next ones go out every `retry_interval` (RON's fast re-probes), and
//! after `down_after` consecutive losses the link is down. It is up again
//! after `up_after` consecutive answers. Round-trip time is smoothed as TCP
//! does (RFC 6298: an EWMA of the RTT and of its deviation), which also
//! gives each probe its timeout; loss is the share of the last
//! `loss_window` probes that went unanswered (the probes not yet sent
//! counting as answered, so that a new link's estimate does not swing).
//!
//! [`Prober`] holds every peer's state and a queue of their deadlines, so
//! that a node with hundreds of peers (or the simulator with hundreds of
//! nodes) finds the next thing to do without scanning them all.
//!
//! Nothing here does I/O or reads a clock: the driver hands in the time
//! with each event and sends the probes it is told to.
//!
//! ## Defaults: failover and probe traffic
//!
//! Interval 200 ms, re-probes every 100 ms, down after 3 losses, probe
//! timeout `srtt + max(4·rttvar, srtt/4)` clamped to 50–500 ms. A link is declared down
//! when its third probe in a row goes unanswered: at most 440 ms after it
//! died, over RTTs from 1 to 100 ms, wherever in the probe cycle it died
//! (`tests::a_dead_link_is_down_within_a_second`).
//!
//! Probe traffic: 5 probes a second per peer, and 5 replies to the peer's
//! own; only while a link is suspect (up, with a probe lost) do re-probes
//! go at 10 a second, for the few hundred milliseconds until it is down or
//! answers again. A link that is down is probed at the steady pace, so a
//! dead peer costs no more than a live one, and comes back up after 3
//! answers (about 600 ms). Probes and replies are 40 bytes of UDP payload
//! (`message::PROBE_LEN`), 82-byte frames over IPv4 and 102 over IPv6: 820
//! to 1020 B/s per peer and direction, under the 2 kB/s budget even during
//! the brief re-probing (at most 1.3 kB/s averaged over any second).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use detour_common::wire::NodeId;

use crate::link::{LinkEstimate, Time};

/// How a node probes its peers.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// Between probes while the link answers.
    pub interval: Duration,
    /// Between probes once one went unanswered while the link was up.
    pub retry_interval: Duration,
    /// Consecutive unanswered probes that take a link down.
    pub down_after: u32,
    /// Consecutive answers that bring it back up.
    pub up_after: u32,
    /// The shortest and longest probe timeout; between them it follows the
    /// measured RTT (`srtt + max(4·rttvar, srtt/4)`).
    pub min_timeout: Duration,
    pub max_timeout: Duration,
    /// The timeout before the first RTT sample.
    pub initial_timeout: Duration,
    /// Probes over which loss is measured.
    pub loss_window: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_millis(200),
            retry_interval: Duration::from_millis(100),
            down_after: 3,
            up_after: 3,
            min_timeout: Duration::from_millis(50),
            max_timeout: Duration::from_millis(500),
            initial_timeout: Duration::from_millis(500),
            loss_window: 100,
        }
    }
}

/// A link's change of state, reported by the event that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

/// Smoothed round-trip time and its mean deviation (RFC 6298, section 2:
/// gains 1/8 and 1/4).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RttEstimator {
    /// `None` until the first sample.
    smoothed: Option<(Duration, Duration)>,
}

impl RttEstimator {
    pub fn sample(&mut self, rtt: Duration) {
        self.smoothed = Some(match self.smoothed {
            None => (rtt, rtt / 2),
            Some((srtt, rttvar)) => {
                let deviation = srtt.abs_diff(rtt);
                (srtt * 7 / 8 + rtt / 8, rttvar * 3 / 4 + deviation / 4)
            }
        });
    }

    /// The smoothed RTT, if there has been a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.smoothed.map(|(s, _)| s)
    }

    /// The mean deviation of the RTT, if there has been a sample.
    pub fn rttvar(&self) -> Option<Duration> {
        self.smoothed.map(|(_, v)| v)
    }

    /// How long to wait for an answer: `srtt + max(4·rttvar, srtt/4)`,
    /// within the configured bounds; the initial timeout before any
    /// sample. The quarter RTT is a floor under the margin: on a steady
    /// link the deviation decays to almost nothing, and ordinary jitter
    /// then made answers late, each a spurious loss (the simulator's
    /// steady overlay showed one probe in 500).
    pub fn timeout(&self, config: &ProbeConfig) -> Duration {
        match self.smoothed {
            None => config.initial_timeout,
            Some((srtt, rttvar)) => {
                (srtt + (rttvar * 4).max(srtt / 4)).clamp(config.min_timeout, config.max_timeout)
            }
        }
    }
}

/// Which of the last probes were lost.
#[derive(Debug, Clone, PartialEq)]
pub struct LossWindow {
    outcomes: VecDeque<bool>,
    lost: usize,
    size: usize,
}

impl LossWindow {
    pub fn new(size: usize) -> LossWindow {
        let size = size.max(1);
        LossWindow {
            outcomes: VecDeque::with_capacity(size),
            lost: 0,
            size,
        }
    }

    pub fn record(&mut self, lost: bool) {
        if self.outcomes.len() == self.size && self.outcomes.pop_front() == Some(true) {
            self.lost -= 1;
        }
        self.outcomes.push_back(lost);
        self.lost += usize::from(lost);
    }

    /// The share of the window's probes that were lost, counting the
    /// probes not yet sent as answered.
    ///
    /// A new link therefore starts at 0 and its estimate climbs by
    /// `1/size` a loss, rather than swinging by `1/len` while the window
    /// fills: with a share of the few probes sent so far, one early loss in
    /// five reads as 20 %, each such swing is a material change that goes
    /// out to every peer and sets off route computations there (in the
    /// simulator, N = 200: 466 kB/s of link state per node and 19.6
    /// computations a second, against 78 kB/s and 2.2 with this). The cost
    /// is that a new link's loss reads low for its first `size` probes
    /// (20 s at the defaults); going down needs no estimate, only misses in
    /// a row.
    pub fn loss(&self) -> f64 {
        self.lost as f64 / self.size as f64
    }
}

/// A probe sent and not yet answered or given up on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Outstanding {
    seq: u64,
    sent: Time,
    deadline: Time,
}

/// Probing one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerProbe {
    config: ProbeConfig,
    up: bool,
    rtt: RttEstimator,
    loss: LossWindow,
    next_seq: u64,
    /// When the first probe goes out, and when the last one went.
    start: Time,
    last_sent: Option<Time>,
    /// When the last answer came.
    last_answer: Option<Time>,
    outstanding: VecDeque<Outstanding>,
    /// The last probes given up on (sequence number, when sent), whose
    /// late answers still measure the RTT.
    given_up: VecDeque<(u64, Time)>,
    /// Unanswered probes in a row, and answers in a row.
    misses: u32,
    answers: u32,
    /// The next probe goes at once (the way to the peer just opened).
    hurry: bool,
}

impl PeerProbe {
    /// A peer not heard from yet: down until it answers `up_after` probes,
    /// the first of which goes out at once.
    pub fn new(config: ProbeConfig, now: Time) -> PeerProbe {
        let loss = LossWindow::new(config.loss_window);
        PeerProbe {
            config,
            up: false,
            rtt: RttEstimator::default(),
            loss,
            next_seq: 1,
            start: now,
            last_sent: None,
            last_answer: None,
            outstanding: VecDeque::new(),
            given_up: VecDeque::with_capacity(GIVEN_UP_REMEMBERED),
            misses: 0,
            answers: 0,
            hurry: false,
        }
    }

    /// Probe `seq` never left (there was no session to send it on): a miss
    /// now, not at its timeout, so that it does not break the streak of
    /// answers that follows once the session is up. It says nothing of the
    /// path, so the loss estimate does not count it; a peer that never has
    /// a session is still judged down after `down_after` of them.
    pub fn unsent(&mut self, seq: u64) -> Option<Transition> {
        let before = self.outstanding.len();
        self.outstanding.retain(|o| o.seq != seq);
        (self.outstanding.len() < before)
            .then(|| self.missed())
            .flatten()
    }

    /// The way to the peer just opened: the next probe goes at once rather
    /// than a whole interval after the one that could not go.
    pub fn hurry(&mut self) {
        self.hurry = true;
    }

    /// What the probes say of the link now.
    pub fn estimate(&self) -> LinkEstimate {
        LinkEstimate {
            up: self.up,
            rtt: self.rtt.srtt().unwrap_or_default(),
            loss: self.loss.loss(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// When the peer last answered a probe; `None`: never.
    pub fn last_answer(&self) -> Option<Time> {
        self.last_answer
    }

    /// The RTT's mean deviation (RFC 6298's RTTVAR); `None` before the
    /// first answer.
    pub fn rtt_deviation(&self) -> Option<Duration> {
        self.rtt.rttvar()
    }

    /// Whether the probes have reached a verdict on the link: up, or
    /// enough misses in a row to call it down. A new peer is down but not
    /// yet settled until then.
    pub fn is_settled(&self) -> bool {
        self.up || self.misses >= self.config.down_after
    }

    /// When this peer next needs attention: a probe to send or one to give
    /// up on.
    pub fn poll_timeout(&self) -> Time {
        let expiry = self.outstanding.iter().map(|o| o.deadline).min();
        expiry.map_or(self.next_send(), |e| e.min(self.next_send()))
    }

    /// Gives up on the probes whose timeout passed; reports the link going
    /// down.
    pub fn handle_timeout(&mut self, now: Time) -> Option<Transition> {
        let mut transition = None;
        while let Some(i) = self.outstanding.iter().position(|o| o.deadline <= now) {
            let probe = self.outstanding.remove(i).expect("found");
            if self.given_up.len() == GIVEN_UP_REMEMBERED {
                self.given_up.pop_front();
            }
            self.given_up.push_back((probe.seq, probe.sent));
            transition = self.lost().or(transition);
        }
        transition
    }

    /// The sequence number of a probe to send now, if one is due; the
    /// driver sends it and later hands the answer to [`Self::handle_reply`].
    pub fn poll_transmit(&mut self, now: Time) -> Option<u64> {
        if now < self.next_send() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_sent = Some(now);
        self.hurry = false;
        self.outstanding.push_back(Outstanding {
            seq,
            sent: now,
            deadline: now + self.rtt.timeout(&self.config),
        });
        Some(seq)
    }

    /// An answer to probe `seq`. An answer to no probe outstanding (a
    /// duplicate, one that came after its timeout, or a forgery that got
    /// this far) returns `Err(StrayReply)` for the driver to count.
    ///
    /// A late answer, to one of the last probes given up on, stays a loss
    /// but is still a sample of the RTT: when a path becomes slower than
    /// the timeout the old estimate gives, the late answers are what makes
    /// the estimate, and the timeout, catch up. Without them the link would
    /// be lost for good on a path that got slower by more than its timeout.
    pub fn handle_reply(&mut self, now: Time, seq: u64) -> Result<Option<Transition>, StrayReply> {
        let Some(i) = self.outstanding.iter().position(|o| o.seq == seq) else {
            if let Some(j) = self.given_up.iter().position(|&(s, _)| s == seq) {
                let (_, sent) = self.given_up.remove(j).expect("found");
                self.rtt.sample(now.saturating_sub(sent));
            }
            return Err(StrayReply);
        };
        let probe = self.outstanding.remove(i).expect("found");
        self.last_answer = Some(now);
        self.rtt.sample(now.saturating_sub(probe.sent));
        self.loss.record(false);
        self.misses = 0;
        self.answers = self.answers.saturating_add(1);
        let back_up = !self.up && self.answers >= self.config.up_after;
        if back_up {
            self.up = true;
        }
        Ok(back_up.then_some(Transition::Up))
    }

    fn lost(&mut self) -> Option<Transition> {
        self.loss.record(true);
        self.missed()
    }

    /// A probe unanswered: the streaks, and a link going down.
    fn missed(&mut self) -> Option<Transition> {
        self.answers = 0;
        self.misses = self.misses.saturating_add(1);
        if self.up && self.misses >= self.config.down_after {
            self.up = false;
            return Some(Transition::Down);
        }
        None
    }

    /// The next probe goes `interval` after the last, or `retry_interval`
    /// after it while an up link is suspect (at once, if that is already
    /// past). A down link gets the steady pace: re-probing fast is for
    /// finding out quickly that a link died, and a dead peer should cost no
    /// more than a live one.
    fn next_send(&self) -> Time {
        if self.hurry {
            return self.start;
        }
        let gap = if self.up && self.misses > 0 {
            self.config.retry_interval
        } else {
            self.config.interval
        };
        self.last_sent.map_or(self.start, |t| t + gap)
    }
}

/// Probes given up on whose late answers are still taken as RTT samples.
const GIVEN_UP_REMEMBERED: usize = 8;

/// An answer to no probe outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrayReply;

/// Probing every peer of a node.
#[derive(Debug, Clone, Default)]
pub struct Prober {
    config: ProbeConfig,
    peers: BTreeMap<NodeId, PeerProbe>,
    /// Each peer's next deadline, earliest first.
    deadlines: BTreeSet<(Time, NodeId)>,
}

impl Prober {
    pub fn new(config: ProbeConfig) -> Prober {
        Prober {
            config,
            peers: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Starts probing `peer` (a no-op if it is probed already).
    pub fn add_peer(&mut self, peer: NodeId, now: Time) {
        if self.peers.contains_key(&peer) {
            return;
        }
        let probe = PeerProbe::new(self.config.clone(), now);
        self.deadlines.insert((probe.poll_timeout(), peer));
        self.peers.insert(peer, probe);
    }

    /// Stops probing `peer`.
    pub fn remove_peer(&mut self, peer: NodeId) {
        if let Some(probe) = self.peers.remove(&peer) {
            self.deadlines.remove(&(probe.poll_timeout(), peer));
        }
    }

    pub fn peer(&self, peer: NodeId) -> Option<&PeerProbe> {
        self.peers.get(&peer)
    }

    /// Every peer's probe state, by id.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, &PeerProbe)> + '_ {
        self.peers.iter().map(|(id, p)| (*id, p))
    }

    /// This node's row of the link table: every peer's estimate.
    pub fn row(&self) -> impl Iterator<Item = (NodeId, LinkEstimate)> + '_ {
        self.peers.iter().map(|(id, p)| (*id, p.estimate()))
    }

    /// When the prober next needs attention; `None` without peers.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Expires overdue probes and picks the next probe due, for one peer
    /// whose deadline has come: call it until it returns
    /// [`Action::Idle`]. Losses that take a link down come back as
    /// [`Action::Transition`], other losses as [`Action::Lost`]; a probe to
    /// send as [`Action::Send`].
    pub fn poll(&mut self, now: Time) -> Action {
        loop {
            let Some(&(deadline, peer)) = self.deadlines.first() else {
                return Action::Idle;
            };
            if deadline > now {
                return Action::Idle;
            }
            let action = self.with_peer(peer, |p| {
                let outstanding = p.outstanding.len();
                if let Some(t) = p.handle_timeout(now) {
                    return Some(Action::Transition(peer, t));
                }
                if p.outstanding.len() < outstanding {
                    return Some(Action::Lost(peer));
                }
                p.poll_transmit(now).map(|seq| Action::Send(peer, seq))
            });
            if let Some(action) = action.flatten() {
                return action;
            }
        }
    }

    /// An answer from `peer` to its probe `seq`; [`StrayReply`] for an
    /// answer to no outstanding probe, or from no peer, for the driver to
    /// count.
    pub fn handle_reply(
        &mut self,
        now: Time,
        peer: NodeId,
        seq: u64,
    ) -> Result<Option<Transition>, StrayReply> {
        self.with_peer(peer, |p| p.handle_reply(now, seq))
            .unwrap_or(Err(StrayReply))
    }

    /// Probe `seq` of `peer` never left: see [`PeerProbe::unsent`].
    pub fn unsent(&mut self, peer: NodeId, seq: u64) -> Option<Transition> {
        self.with_peer(peer, |p| p.unsent(seq)).flatten()
    }

    /// The next probe of `peer` goes at once: see [`PeerProbe::hurry`].
    pub fn hurry(&mut self, peer: NodeId) {
        self.with_peer(peer, PeerProbe::hurry);
    }

    /// Runs `f` on `peer`'s state and re-files its deadline.
    fn with_peer<R>(&mut self, peer: NodeId, f: impl FnOnce(&mut PeerProbe) -> R) -> Option<R> {
        let probe = self.peers.get_mut(&peer)?;
        self.deadlines.remove(&(probe.poll_timeout(), peer));
        let result = f(probe);
        self.deadlines.insert((probe.poll_timeout(), peer));
        Some(result)
    }
}

/// What the prober asks of its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send probe `seq` to the peer.
    Send(NodeId, u64),
    /// The link to the peer went up or down.
    Transition(NodeId, Transition),
    /// A probe to the peer went unanswered, which moved its loss estimate
    /// but not its state.
    Lost(NodeId),
    /// Nothing more until [`Prober::poll_timeout`].
    Idle,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: NodeId = NodeId(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives a prober with one peer over a link that answers each probe
    /// after `rtt(t)` when the probe is sent at `t`, or never when that is
    /// `None`; returns the transitions and the number of probes sent.
    fn drive(
        prober: &mut Prober,
        from: Time,
        until: Time,
        mut rtt: impl FnMut(Time, u64) -> Option<Duration>,
    ) -> (Vec<(Time, Transition)>, u64) {
        let mut replies: BTreeSet<(Time, u64)> = BTreeSet::new();
        let mut transitions = Vec::new();
        let mut sent = 0;
        let mut now = from;
        while now <= until {
            while let Some(&(at, seq)) = replies.first() {
                if at > now {
                    break;
                }
                replies.pop_first();
                if let Ok(Some(t)) = prober.handle_reply(at, PEER, seq) {
                    transitions.push((at, t));
                }
            }
            loop {
                match prober.poll(now) {
                    Action::Send(_, seq) => {
                        sent += 1;
                        if let Some(r) = rtt(now, seq) {
                            replies.insert((now + r, seq));
                        }
                    }
                    Action::Transition(_, t) => transitions.push((now, t)),
                    Action::Lost(_) => {}
                    Action::Idle => break,
                }
            }
            let next_reply = replies.first().map(|(t, _)| *t);
            now = match (prober.poll_timeout(), next_reply) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
        }
        (transitions, sent)
    }

    fn prober() -> Prober {
        let mut p = Prober::new(ProbeConfig::default());
        p.add_peer(PEER, Time::ZERO);
        p
    }

    #[test]
    fn a_probe_that_could_not_go_is_a_miss_but_no_loss() {
        let config = ProbeConfig::default();
        let mut p = PeerProbe::new(config.clone(), Time::ZERO);
        // No session yet: the first probes cannot go.
        for i in 0..u64::from(config.down_after) {
            let seq = p.poll_transmit(config.interval * i as u32).unwrap();
            assert_eq!(p.unsent(seq), None);
        }
        assert!(p.is_settled() && !p.is_up(), "judged down");
        assert_eq!(p.estimate().loss, 0.0, "nothing said of the path");
        assert_eq!(p.unsent(999), None, "an unknown probe changes nothing");
        // The session comes up: at once, a streak of answers.
        p.hurry();
        let mut now = config.interval * 3;
        for _ in 0..config.up_after {
            let seq = p.poll_transmit(now).expect("due");
            now += ms(10);
            p.handle_reply(now, seq).unwrap();
            now = p.poll_timeout();
        }
        assert!(p.is_up());
        assert_eq!(p.estimate().loss, 0.0);
    }

    #[test]
    fn rtt_estimate_follows_rfc_6298() {
        let config = ProbeConfig::default();
        let mut rtt = RttEstimator::default();
        assert_eq!(rtt.timeout(&config), config.initial_timeout);
        rtt.sample(ms(100));
        assert_eq!(rtt.smoothed, Some((ms(100), ms(50))));
        rtt.sample(ms(200));
        // srtt = 7/8·100 + 1/8·200; rttvar = 3/4·50 + 1/4·|100 − 200|.
        assert_eq!(
            rtt.smoothed,
            Some((
                Duration::from_micros(112_500),
                ms(62) + Duration::from_micros(500)
            ))
        );
        assert_eq!(rtt.timeout(&config), ms(362) + Duration::from_micros(500));
        let mut fast = RttEstimator::default();
        fast.sample(Duration::from_micros(100));
        assert_eq!(fast.timeout(&config), config.min_timeout, "clamped");
    }

    #[test]
    fn loss_is_measured_over_the_last_probes_only() {
        let mut w = LossWindow::new(4);
        assert_eq!(w.loss(), 0.0);
        w.record(true);
        assert_eq!(w.loss(), 0.25, "the probes not yet sent count as answered");
        for lost in [true, false, false] {
            w.record(lost);
        }
        assert_eq!(w.loss(), 0.5);
        w.record(false);
        w.record(false);
        assert_eq!(w.loss(), 0.0, "the two losses left the window");
    }

    #[test]
    fn a_new_peer_comes_up_after_a_streak_of_answers() {
        let mut p = prober();
        let (transitions, _) = drive(&mut p, Time::ZERO, ms(1000), |_, _| Some(ms(5)));
        // Probes at 0, 200, 400 ms; up at the third answer.
        assert_eq!(transitions, vec![(ms(405), Transition::Up)]);
        let e = p.peer(PEER).unwrap().estimate();
        assert!(e.up && e.loss == 0.0 && e.rtt == ms(5), "{e:?}");
    }

    #[test]
    fn a_dead_link_is_down_within_a_second() {
        // Cut at many phases of the probe cycle, over short and long RTTs.
        let mut worst = BTreeMap::new();
        for rtt in [1, 20, 50, 100] {
            for phase in 0..20 {
                let cut = ms(2000 + phase * 10);
                let mut p = prober();
                let (transitions, _) = drive(&mut p, Time::ZERO, ms(5000), |t, _| {
                    (t + ms(rtt) < cut).then_some(ms(rtt))
                });
                let down = transitions
                    .iter()
                    .find(|(_, t)| *t == Transition::Down)
                    .map(|(at, _)| *at - cut)
                    .expect("the link goes down");
                let w = worst.entry(rtt).or_insert(Duration::ZERO);
                *w = (*w).max(down);
            }
        }
        // The module documentation quotes these figures.
        assert!(worst.values().all(|w| *w <= ms(450)), "{worst:?}");
    }

    #[test]
    fn a_steady_link_with_jitter_never_flaps() {
        let mut p = prober();
        // A deterministic jitter of 10 to 40 ms.
        let mut x: u64 = 1;
        let (transitions, sent) = drive(&mut p, Time::ZERO, ms(60_000), |_, _| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Some(ms(10 + (x >> 33) % 31))
        });
        assert_eq!(transitions.len(), 1, "only the first Up: {transitions:?}");
        // 5 probes a second once up.
        assert!((295..=305).contains(&sent), "{sent} probes in 60 s");
    }

    #[test]
    fn a_lossy_link_stays_up_and_reports_its_loss() {
        let mut p = prober();
        // Every fifth probe lost: never three in a row.
        let (transitions, _) = drive(&mut p, Time::ZERO, ms(30_000), |_, seq| {
            (seq % 5 != 0).then_some(ms(10))
        });
        assert_eq!(transitions, vec![(ms(410), Transition::Up)]);
        let loss = p.peer(PEER).unwrap().estimate().loss;
        assert!((0.18..=0.22).contains(&loss), "loss {loss}");
    }

    #[test]
    fn a_link_that_comes_back_is_up_again_quickly_and_probing_stays_within_budget() {
        let mut p = prober();
        let (down_at, back_at) = (ms(2000), ms(12_000));
        let (transitions, sent) = drive(&mut p, Time::ZERO, ms(20_000), |t, _| {
            (t < down_at || t >= back_at).then_some(ms(10))
        });
        let kinds: Vec<_> = transitions.iter().map(|(_, t)| *t).collect();
        assert_eq!(kinds, [Transition::Up, Transition::Down, Transition::Up]);
        let (up_again, _) = transitions[2];
        assert!(
            up_again - back_at <= ms(610),
            "up {:?} after",
            up_again - back_at
        );
        // 20 s at 5 probes a second, and the re-probes of one suspect spell.
        assert!(sent <= 20 * 5 + 3, "{sent} probes");
    }

    #[test]
    fn stray_and_duplicate_replies_change_nothing() {
        let mut p = prober();
        let Action::Send(_, seq) = p.poll(Time::ZERO) else {
            panic!("a probe at once")
        };
        let before = p.peer(PEER).unwrap().clone();
        assert_eq!(p.handle_reply(ms(1), PEER, seq + 7), Err(StrayReply));
        assert_eq!(p.handle_reply(ms(1), NodeId(9), seq), Err(StrayReply));
        assert_eq!(p.peer(PEER).unwrap(), &before);
        assert_eq!(p.handle_reply(ms(1), PEER, seq), Ok(None));
        assert_eq!(p.handle_reply(ms(2), PEER, seq), Err(StrayReply), "twice");
        // A reply after the probe timed out is stray too.
        let Action::Send(_, late) = p.poll(ms(200)) else {
            panic!("the next probe")
        };
        assert_eq!(p.poll(ms(700)), Action::Lost(PEER));
        assert_eq!(p.poll(ms(700)), Action::Send(PEER, late + 1));
        assert_eq!(p.handle_reply(ms(701), PEER, late), Err(StrayReply));
    }

    /// A path whose RTT jumps from 2 ms to 200 ms, far past the 50 ms
    /// timeout the old estimate gives: the late answers move the estimate,
    /// and the link stays up (or comes back), measured at its new RTT.
    /// It used to go down and stay down: every answer was late.
    #[test]
    fn a_path_that_slows_past_its_timeout_is_measured_not_lost() {
        for rtt_after in [ms(200), ms(450)] {
            let mut p = prober();
            let mut replies: Vec<(Time, u64)> = Vec::new();
            let mut now = Time::ZERO;
            let mut downs = 0;
            while now < Duration::from_secs(20) {
                let rtt = if now < ms(5000) { ms(2) } else { rtt_after };
                let next_reply = replies.iter().map(|r| r.0).min();
                let next = match (p.poll_timeout(), next_reply) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).unwrap(),
                };
                now = next;
                if let Some(i) = replies.iter().position(|r| r.0 <= now) {
                    let (_, seq) = replies.remove(i);
                    let _ = p.handle_reply(now, PEER, seq);
                    continue;
                }
                match p.poll(now) {
                    Action::Send(_, seq) => replies.push((now + rtt, seq)),
                    Action::Transition(_, Transition::Down) => downs += 1,
                    _ => {}
                }
            }
            let peer = p.peer(PEER).unwrap();
            assert!(peer.is_up(), "{rtt_after:?}: the link is up at the end");
            let srtt = peer.estimate().rtt;
            assert!(
                srtt > rtt_after * 9 / 10 && srtt < rtt_after * 11 / 10,
                "{rtt_after:?}: measured {srtt:?}"
            );
            assert!(downs <= 1, "{rtt_after:?}: {downs} times down");
        }
    }

    #[test]
    fn many_peers_are_served_in_deadline_order() {
        let mut p = Prober::new(ProbeConfig::default());
        for id in 1..=300 {
            p.add_peer(NodeId(id), ms(u64::from(id)));
        }
        let mut sends = Vec::new();
        while let Some(t) = p.poll_timeout() {
            if t > ms(300) {
                break;
            }
            if let Action::Send(peer, _) = p.poll(t) {
                sends.push((t, peer.0));
            }
        }
        assert!(sends.is_sorted(), "in deadline order");
        // Each peer at its start, then at the steady pace.
        let expected = (1..=300u64)
            .flat_map(|id| (0..2).map(move |k| (ms(id + 200 * k), id as u16)))
            .filter(|(t, _)| *t <= ms(300));
        let mut expected: Vec<_> = expected.collect();
        expected.sort();
        assert_eq!(sends, expected);
        p.remove_peer(NodeId(1));
        assert!(p.peer(NodeId(1)).is_none() && p.row().count() == 299);
    }
}
