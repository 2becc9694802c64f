//! What the tests and the testbed need of ethtool, by ioctl (no ethtool
//! binary needed): the transmit checksum offload, and the driver's
//! statistics (`ethtool -S`), which for a veth count the XDP frames its
//! peer could and could not take.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;

/// Runs ethtool command `data` (a struct starting with its `cmd`) on
/// `iface`, in the calling thread's namespace.
fn ethtool(iface: &str, what: &str, data: &mut [u64]) -> io::Result<()> {
    let mut ifreq = [0u8; 40];
    if iface.len() >= 16 {
        return Err(io::Error::other(format!("{iface}: name too long")));
    }
    ifreq[..iface.len()].copy_from_slice(iface.as_bytes());
    ifreq[16..24].copy_from_slice(&(data.as_mut_ptr() as usize).to_ne_bytes());
    // Any socket of the namespace carries the ioctl.
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
    // SAFETY: SIOCETHTOOL reads a struct ifreq whose ifr_data points at
    // `data`, which is as large as the command's struct says; both live
    // until the call returns.
    if unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, ifreq.as_mut_ptr()) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{iface}: {what}: {e}")));
    }
    Ok(())
}

/// The first two `u32`s of an ethtool struct, as the low and high half of
/// a `u64` (the buffers are `u64`s for alignment).
fn words(a: u32, b: u32) -> u64 {
    if cfg!(target_endian = "little") {
        u64::from(a) | u64::from(b) << 32
    } else {
        u64::from(a) << 32 | u64::from(b)
    }
}

fn bytes(data: &[u64]) -> Vec<u8> {
    data.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// Turns the transmit checksum offload of `iface` (in the calling thread's
/// namespace) on or off: `ethtool -K IFACE tx on|off`.
pub fn set_tx_checksum(iface: &str, on: bool) -> io::Result<()> {
    let mut value = [words(ETHTOOL_STXCSUM, u32::from(on))];
    ethtool(iface, "tx checksum offload", &mut value)
}

/// The driver's statistics of `iface` by name: `ethtool -S IFACE`.
pub fn stats(iface: &str) -> io::Result<BTreeMap<String, u64>> {
    // struct ethtool_sset_info: cmd, reserved, sset_mask (u64), data[1].
    let mut info = [words(ETHTOOL_GSSET_INFO, 0), 1 << ETH_SS_STATS, 0];
    ethtool(iface, "statistics count", &mut info)?;
    let n = if info[1] & 1 << ETH_SS_STATS != 0 {
        bytes(&info[2..])[..4]
            .try_into()
            .map(u32::from_ne_bytes)
            .unwrap() as usize
    } else {
        0
    };
    // struct ethtool_gstrings: cmd, string_set, len, then the names.
    let mut names = vec![0u64; 2 + (n * ETH_GSTRING_LEN).div_ceil(8)];
    names[0] = words(ETHTOOL_GSTRINGS, ETH_SS_STATS);
    names[1] = words(n as u32, 0);
    ethtool(iface, "statistics names", &mut names)?;
    // struct ethtool_stats: cmd, n_stats, then the values.
    let mut values = vec![0u64; 1 + n];
    values[0] = words(ETHTOOL_GSTATS, n as u32);
    ethtool(iface, "statistics", &mut values)?;
    let names = bytes(&names);
    Ok((0..n)
        .map(|i| {
            let at = 12 + i * ETH_GSTRING_LEN;
            let name = &names[at..at + ETH_GSTRING_LEN];
            let end = name.iter().position(|&b| b == 0).unwrap_or(ETH_GSTRING_LEN);
            (
                String::from_utf8_lossy(&name[..end]).into_owned(),
                values[1 + i],
            )
        })
        .collect())
}
