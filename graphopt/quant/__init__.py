"""Lossy compilation support: calibration data and ranges, INT8 placement, the accuracy budget
shared by int8 and pruning, and the options every lossy layer pass has."""
