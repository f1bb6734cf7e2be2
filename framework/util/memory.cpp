#include "framework/util/memory.h"

#include <cstdio>
#include <cstring>

namespace tessera {

double peak_rss_mib() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  double kib = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, "VmHWM:", 6) == 0) {  // "VmHWM:     123456 kB"
      long long v = 0;
      if (std::sscanf(line + 6, "%lld", &v) == 1) kib = (double)v;
      break;
    }
  }
  std::fclose(f);
  return kib / 1024.0;
}

}  // namespace tessera
