"""light_pole: motion-dimmed path light (PWM lamp, PIR/radar, ambient ADC, current sense)."""
