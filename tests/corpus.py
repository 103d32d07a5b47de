"""Texts the memory tests write: distractors, a paraphrase target and a rare ticket id."""

TARGET = "The billing service deployment failed because the database migration timed out."
# Shares no word with TARGET (stop words aside), but means the same.
PARAPHRASE = "payments system release broke when schema change took too long"
TICKET = "Customer reports a login loop on the mobile app, tracked as ZX-48213."
DISTRACTORS = [
    "Our cat likes to sleep on the warm laptop keyboard in the afternoon.",
    "Quarterly revenue grew by twelve percent thanks to new enterprise customers.",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
    "The hiking trail to the lake is closed after the storm last week.",
    "Remember to water the tomatoes and basil on the balcony every evening.",
    "The team offsite will be in Lisbon, with a boat trip on Friday.",
    "Password reset emails were delayed for an hour by the mail provider.",
    "The new office coffee machine makes espresso and hot chocolate.",
]
CORPUS = [TARGET, TICKET, *DISTRACTORS]
