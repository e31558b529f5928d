"""`tapsim backoffice replay`: a day of taps through validators' kernels and the whole core."""
