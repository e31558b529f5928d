"""The validator on the bus: readers, the tap flow, local deny list, journal, MQTT uplink."""
