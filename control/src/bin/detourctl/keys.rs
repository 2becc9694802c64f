//! `detourctl genkey` and `detourctl pubkey`: a node's key pair, as `wg
//! genkey` and `wg pubkey` make theirs (and compatible with them).

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use detour_control::keys::PrivateKey;

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct GenkeyArgs {
    /// Write the key to FILE, created with mode 0600 (refused if it
    /// exists); without FILE, to standard output.
    file: Option<PathBuf>,
    /// Print the key even to a terminal, where anyone looking can read it.
    #[arg(long)]
    force: bool,
}

pub fn genkey(args: &GenkeyArgs) -> Result<(), Failure> {
    let key = PrivateKey::generate()
        .map_err(|e| Failure::Refused(format!("no random numbers from the OS: {e}")))?;
    let text = key.to_base64();
    match &args.file {
        Some(path) => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Failure::Refused(format!("{}: {e}", path.display())))?;
            file.write_all(text.as_bytes())
                .map_err(|e| Failure::Refused(format!("{}: {e}", path.display())))
        }
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() && !args.force {
                return Err(Failure::Refused(
                    "not printing a private key to a terminal: redirect it to a file \
                     (detourctl genkey > private.key, or detourctl genkey private.key), \
                     or pass --force"
                        .into(),
                ));
            }
            restrict_if_a_file(&stdout)?;
            stdout
                .lock()
                .write_all(text.as_bytes())
                .map_err(|e| Failure::Refused(format!("writing the key: {e}")))
        }
    }
}

/// `detourctl genkey > private.key` makes the file with the shell's umask
/// (often 0644), which the control process refuses: a regular file on
/// standard output is made 0600 before the key is written to it.
fn restrict_if_a_file(stdout: &io::Stdout) -> Result<(), Failure> {
    let fd = stdout
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Failure::Refused(format!("standard output: {e}")))?;
    let file = File::from(fd);
    match file.metadata() {
        Ok(m) if m.is_file() => file
            .set_permissions(Permissions::from_mode(0o600))
            .map_err(|e| Failure::Refused(format!("making the key file mode 0600: {e}"))),
        _ => Ok(()),
    }
}

/// Reads a private key on standard input and prints its public key.
pub fn pubkey() -> Result<(), Failure> {
    let mut text = zeroize::Zeroizing::new(String::new());
    io::stdin()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| Failure::Refused(format!("reading the private key: {e}")))?;
    let key = PrivateKey::from_base64(&text)
        .map_err(|e| Failure::Refused(format!("standard input: {e}")))?;
    println!("{}", key.public_key());
    Ok(())
}
