// Memory use of this process, for the run log.
#pragma once

namespace tessera {

// Peak resident set size of this process so far, in MiB (VmHWM of /proc/self/status:
// the high-water mark of resident memory since the process started). 0 where it cannot
// be read (no /proc, or a kernel without the field).
double peak_rss_mib();

}  // namespace tessera
