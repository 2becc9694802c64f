//! The one ethtool setting the testbed needs, by ioctl (no ethtool binary
//! needed).

use std::io;
use std::os::fd::AsRawFd;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns the transmit checksum offload of `iface` (in the calling thread's
/// namespace) on or off: `ethtool -K IFACE tx on|off`.
pub fn set_tx_checksum(iface: &str, on: bool) -> io::Result<()> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    let mut ifreq = [0u8; 40];
    if iface.len() >= 16 {
        return Err(io::Error::other(format!("{iface}: name too long")));
    }
    ifreq[..iface.len()].copy_from_slice(iface.as_bytes());
    let data = &mut value as *mut EthtoolValue as usize;
    ifreq[16..24].copy_from_slice(&data.to_ne_bytes());
    // Any socket of the namespace carries the ioctl.
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
    // SAFETY: SIOCETHTOOL reads a struct ifreq whose ifr_data points at
    // `value`; both live until the call returns.
    if unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, ifreq.as_mut_ptr()) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("{iface}: tx checksum offload: {e}"),
        ));
    }
    Ok(())
}
