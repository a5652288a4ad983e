/* placeholder, replaced by the SPTE engine */
#include "pykvmmu.h"
#include "common.h"
