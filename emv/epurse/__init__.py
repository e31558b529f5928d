"""The T-Union e-purse (closed loop, JT/T 978 / PBOC ED/EP): stored value on the chip.

* ``keys``: key diversification, session keys, MAC1/MAC2/TAC, 3DES or SM4 (layout and why);
* ``messages``: the commands, answers, transaction records and public data as bytes;
* ``application``: the card's side (purchase, load, proof, balance, log);
* ``psam``: the validator's PSAM (purchase keys, MAC1, MAC2, terminal serials, torn purchases);
* ``purchase``: the terminal's purchase, a sans-I/O state machine the kernel hands over to;
* ``load``: loading at a bank branch, with the load key.
"""
