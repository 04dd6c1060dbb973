"""melanged: keeps dnsmasq's files in step with the store (see melanged.main)."""
