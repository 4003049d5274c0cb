// Every raw system call the Worker makes goes through this file.

import CPrivsepShims
import Glibc
import PrivsepIPC
import SystemPackage

func system_prctl(_ option: Int32, _ argument: UInt) -> Result<Int32, Errno> {
    let rc = privsep_prctl(option, argument, 0, 0, 0)
    return rc >= 0 ? .success(rc) : .failure(currentErrno())
}

func system_getppid() -> pid_t { getppid() }
func system_getuid() -> uid_t { getuid() }
func system_getpid() -> pid_t { getpid() }

func system_listen(_ fd: Int32, _ backlog: Int32) -> Result<Void, Errno> {
    Glibc.listen(fd, backlog) == 0 ? .success(()) : .failure(currentErrno())
}
