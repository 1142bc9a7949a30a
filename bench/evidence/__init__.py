"""The experiments behind the README's claims: accuracy (the pre-declared protocol, on the set
that accuracy_set makes) and soak (planted faults and kills, nothing lost)."""
