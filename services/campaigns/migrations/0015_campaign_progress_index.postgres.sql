-- Campaign progress counts a campaign's tests by state and outcome: an
-- index holding all three answers it from the index alone, without a
-- read of each (wide) test row. Its prefix serves every lookup of
-- tests by campaign, so the campaign-only index goes.
CREATE INDEX tests_campaign_progress ON tests (campaign_id, state, outcome);
DROP INDEX tests_campaign;
