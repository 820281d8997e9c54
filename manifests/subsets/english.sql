-- Kept samples whose caption fastText identifies as English.
SELECT * FROM samples WHERE status = 'kept' AND lang = 'en'
