-- Every outcome written updated this index too; listing by outcome walks the primary key
-- newest first with a filter instead, which a page of results needs only a little of.
DROP INDEX deliveries_by_outcome;
