// Nothing to compile: the declaration in include/FuzzDriver.h is defined by libFuzzer.
#include "FuzzDriver.h"
